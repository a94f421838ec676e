"""The rerank service: one loaded model, limits, and cross-request batching.

Every front end (HTTP server, CLI, web page, Ray replica) that serves many callers goes through
a :class:`RerankService`: a :class:`~finerank.Reranker` on the batching path every served model
shares (:class:`~finerank.batching.BatchedService`): concurrent :meth:`RerankService.rerank`
calls are tokenized on a helper thread (big ones in steps, small ones first) and their pairs
share token-budget forward passes on one worker thread
(:class:`~finerank.engine.scheduler.BatchScheduler`). It raises only domain errors
(:mod:`finerank.errors`), which the HTTP layer maps to status codes in one place. Cancelling a
call (e.g. the HTTP client went away) drops its queued pairs before they run.

Example:
    >>> import asyncio
    >>> from finerank.settings import Settings
    >>> from finerank.runtime import build_reranker
    >>> settings = Settings(model="/models/Qwen3-Reranker-0.6B")
    >>> service = RerankService(settings)
    >>> service.start(build_reranker(settings))  # starts the worker  # doctest: +SKIP
    >>> outcome = asyncio.run(service.rerank("capital of China?",
    ...     ["Beijing is the capital.", "Bananas are yellow."], top_n=1))  # doctest: +SKIP
    >>> outcome.results[0].index, outcome.prompt_tokens  # doctest: +SKIP
    (0, 142)
    >>> service.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finerank.batching import INLINE_PREPARE_CHARS, BatchedService, RequestClock, RequestTimings
from finerank.engine.engine import ScoreResult, rank_results
from finerank.errors import InvalidInputError, UnknownModelError
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.engine.engine import PreparedRequest, ScoringEngine
    from finerank.reranker import Reranker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankOutcome:
    """Ranked results (best first, at most ``top_n``), the tokens the model read and where the
    request's time went (``timings``: tokenize, queue, forward, total)."""

    results: list[ScoreResult]
    prompt_tokens: int
    num_documents: int
    timings: RequestTimings


@dataclass(frozen=True)
class ScoreOutcome:
    """One result per (text_1, text_2) pair, in input order (``index`` = pair position), and
    the request's ``timings``."""

    results: list[ScoreResult]
    prompt_tokens: int
    timings: RequestTimings


class RerankService(BatchedService["Reranker"]):
    """A reranker plus a batching worker, safe to call from many coroutines at once.

    The reranker comes from :class:`finerank.runtime.Runtime` (which builds it from
    ``settings``), given here or to :meth:`start`. Limits come from ``settings``
    (``max_documents_per_request``, ``max_tokens_per_request``, ``max_queue_pairs``). The
    lifecycle (:meth:`start`, :meth:`stop`, :attr:`ready`, :meth:`add_batch_listener`) and the
    batching path are :class:`~finerank.batching.BatchedService`'s.
    """

    missing_model_message = "no reranker loaded: build one with finerank.runtime.Runtime(settings)"
    not_ready_message = "the model is not loaded yet or the service is shutting down; retry shortly"
    token_limit_hint = "; send fewer or shorter documents (or set max_tokens_per_doc)"

    def __init__(self, settings: Settings | None = None, *, reranker: Reranker | None = None):
        super().__init__(settings, model=reranker)
        if reranker is None and not self.settings.model:
            raise InvalidInputError("no model: set Settings(model=...) or pass reranker=")

    def _batch_model(self, model: Reranker) -> ScoringEngine:
        return model.engine

    @property
    def reranker(self) -> Reranker | None:
        """The loaded reranker (None before :meth:`start` when none was given)."""
        return self.model

    # ---- identity --------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The name clients see (``/v1/models``) and may send as ``model``."""
        return self.settings.public_model_name

    @property
    def served_names(self) -> list[str]:
        """Every name a request's ``model`` may carry: the public name, then the model id."""
        names = [self.model_name]
        if self.settings.model and self.settings.model not in names:
            names.append(self.settings.model)
        return names

    def check_model(self, name: str | None) -> None:
        """Raise :class:`UnknownModelError` unless ``name`` is empty or a served name."""
        if name and name not in self.served_names:
            raise UnknownModelError(
                f"model {name!r} is not served here; served model: {self.model_name!r}"
            )

    # ---- scoring ---------------------------------------------------------------------------
    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
        long_document: str | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> RerankOutcome:
        """Rank ``documents`` for ``query`` (best first), batched with concurrent calls.

        Same scores as :meth:`finerank.Reranker.rerank`. ``instruction`` and ``long_document``
        default to the settings. Raises :class:`InvalidInputError` (bad values),
        :class:`LimitExceededError`, :class:`QueueFullError`, :class:`ServiceUnavailableError`.

        Example:
            >>> outcome = await service.rerank("q", ["a", "b"], top_n=1)  # doctest: +SKIP
            >>> [r.index for r in outcome.results]  # doctest: +SKIP
            [1]
        """
        clock = RequestClock()
        if top_n is not None:
            rank_results([], top_n)  # validates before any work
        self._check_count(len(documents) if isinstance(documents, Sequence) else 0, "documents")
        prepared = await self._prepare_request(
            query,
            documents,
            clock,
            instruction=self.settings.instruction if instruction is None else instruction,
            long_document=long_document or self.settings.long_document,
            max_tokens_per_doc=max_tokens_per_doc,
        )
        logits = await self._submit(prepared.items, clock=clock)
        results = rank_results(prepared.collect(logits, return_documents=return_documents), top_n)
        return RerankOutcome(results, prepared.num_tokens, len(documents), self._finish(clock))

    async def score(
        self,
        text_1: str | Sequence[str],
        text_2: str | Sequence[str],
        *,
        instruction: str | None = None,
    ) -> ScoreOutcome:
        """Score (query, document) pairs like vLLM's ``/score``: a single ``text_1`` (or a list
        of one) is paired with every ``text_2``; otherwise both lists pair up by position.

        Example:
            >>> outcome = await service.score("q", ["a", "b"])  # doctest: +SKIP
            >>> [round(r.score, 3) for r in outcome.results]  # doctest: +SKIP
            [0.12, 0.87]
        """
        clock = RequestClock()
        queries = [text_1] if isinstance(text_1, str) else list(text_1)
        documents = [text_2] if isinstance(text_2, str) else list(text_2)
        if len(queries) == 1:
            queries = queries * len(documents)
        if len(queries) != len(documents):
            raise InvalidInputError(
                f"text_1 has {len(queries)} items and text_2 has {len(documents)}: pass one "
                "text_1, or as many as text_2"
            )
        self._check_count(len(documents), "pairs")
        instruction = self.settings.instruction if instruction is None else instruction
        # Pairs with the same query are prepared together so their prefix is shared.
        groups: dict[str, list[int]] = {}
        for position, query in enumerate(queries):
            if not isinstance(query, str):
                raise InvalidInputError(f"text_1[{position}] must be a string")
            groups.setdefault(query, []).append(position)
        prepared_groups: list[tuple[list[int], PreparedRequest]] = []
        for query, positions in groups.items():
            docs = [documents[p] for p in positions]
            prepared = await self._prepare_request(query, docs, clock, instruction=instruction)
            prepared_groups.append((positions, prepared))
        total_tokens = sum(p.num_tokens for _, p in prepared_groups)
        self._check_tokens(total_tokens)
        logits = await self._submit([i for _, p in prepared_groups for i in p.items], clock=clock)
        results: list[ScoreResult | None] = [None] * len(documents)
        offset = 0
        for positions, prepared in prepared_groups:
            part = logits[offset : offset + len(prepared.items)]
            offset += len(prepared.items)
            for position, result in zip(positions, prepared.collect(part), strict=True):
                results[position] = ScoreResult(
                    index=position, score=result.score, logit=result.logit
                )
        scored = [r for r in results if r is not None]
        return ScoreOutcome(scored, total_tokens, self._finish(clock))

    # ---- preparing ------------------------------------------------------------------------
    async def _prepare_request(
        self, query: str, documents: Sequence[str], clock: RequestClock, **kwargs: Any
    ) -> PreparedRequest:
        """Tokenize one request on the shared path (:meth:`BatchedService._prepare`): big ones
        in the engine's ``prepare_steps``, stopped as soon as they are known to be over
        ``max_tokens_per_request`` (a bound from the text's size tells when they cannot be,
        before any tokenizing); the tokenizer's time goes to ``clock``."""
        self._require_ready()
        assert self.reranker is not None
        engine = self.reranker.engine

        def whole() -> PreparedRequest:
            return engine.prepare(query, documents, **kwargs)

        def steps():
            return engine.prepare_steps(query, documents, **kwargs)

        size = len(query) + sum(len(d) for d in documents if isinstance(d, str))
        check_step = None
        if size > INLINE_PREPARE_CHARS:
            bound_kwargs = {k: kwargs[k] for k in ("instruction", "long_document") if k in kwargs}
            bound = engine.token_upper_bound(query, documents, **bound_kwargs)
            if bound > self.settings.max_tokens_per_request:
                check_step = self._check_tokens_at_least
        prepared = await self._prepare(size, whole, steps, check_step=check_step, clock=clock)
        self._check_tokens(prepared.num_tokens)
        return prepared

    def _check_tokens_at_least(self, tokens: int) -> None:
        self._check_tokens(tokens, at_least=True)
