"""The rerank service: one loaded model, limits, and cross-request batching.

Every front end (HTTP server, CLI, web page, Ray replica) that serves many callers goes through
a :class:`RerankService`. It owns a :class:`~finerank.Reranker` and a
:class:`~finerank.engine.scheduler.BatchScheduler`; concurrent :meth:`RerankService.rerank`
calls are tokenized on a helper thread and their pairs share token-budget forward passes on
one worker thread. It raises only domain errors (:mod:`finerank.errors`), which the HTTP layer
maps to status codes in one place. Cancelling a call (e.g. the HTTP client went away) drops its
queued pairs before they run.

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

import asyncio
import contextlib
import functools
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finerank.engine.engine import ScoreResult, rank_results
from finerank.errors import (
    InvalidInputError,
    LimitExceededError,
    ServiceUnavailableError,
    UnknownModelError,
)
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.engine.engine import PreparedRequest
    from finerank.engine.scheduler import BatchScheduler, BatchStats
    from finerank.reranker import Reranker

logger = logging.getLogger(__name__)

# Requests up to this many characters (query + documents) are tokenized in one go (on the
# event loop when the tokenizer is free); bigger ones in steps on the prepare lane.
INLINE_PREPARE_CHARS = 8192


class PrepareLane:
    """One thread that tokenizes, urgent work (small requests) first.

    Big requests submit one step at a time and queue the next only when it is done, so an
    urgent job submitted meanwhile runs before their next step. Jobs hold ``lock`` (shared
    with inline tokenizing on the event loop: tokenizers are not safe to call concurrently).
    """

    def __init__(self, lock: threading.Lock):
        self._lock = lock
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="finerank-prepare", daemon=True)
        self._thread.start()

    def submit(self, func: Callable[[], Any], *, urgent: bool = False) -> Future:
        if self._closed:
            raise RuntimeError("the prepare lane is stopped")
        future: Future = Future()
        self._jobs.put((0 if urgent else 1, next(self._order), func, future))
        return future

    def _work(self) -> None:
        while True:
            _, _, func, future = self._jobs.get()
            if func is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with self._lock:
                    result = func()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True) -> None:
        """Finish what was queued, then stop (pending jobs of later submitters fail)."""
        self._closed = True
        self._jobs.put((2, next(self._order), None, None))
        if wait:
            self._thread.join()


@dataclass(frozen=True)
class RerankOutcome:
    """Ranked results (best first, at most ``top_n``) and the tokens the model read."""

    results: list[ScoreResult]
    prompt_tokens: int
    num_documents: int


@dataclass(frozen=True)
class ScoreOutcome:
    """One result per (text_1, text_2) pair, in input order (``index`` = pair position)."""

    results: list[ScoreResult]
    prompt_tokens: int


class RerankService:
    """A reranker plus a batching worker, safe to call from many coroutines at once.

    The reranker comes from :class:`finerank.runtime.Runtime` (which builds it from
    ``settings``), given here or to :meth:`start`. Limits come from ``settings``
    (``max_documents_per_request``, ``max_tokens_per_request``, ``max_queue_pairs``).
    """

    def __init__(self, settings: Settings | None = None, *, reranker: Reranker | None = None):
        self.settings = settings or Settings()
        if reranker is None and not self.settings.model:
            raise InvalidInputError("no model: set Settings(model=...) or pass reranker=")
        self.reranker: Reranker | None = reranker
        self.scheduler: BatchScheduler | None = None
        self._prep: PrepareLane | None = None
        self._lock = threading.Lock()
        self._prep_lock = threading.Lock()
        self._preparing = 0
        self._listeners: list[Callable[[BatchStats], None]] = []
        self._accepting = False

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

    @property
    def ready(self) -> bool:
        """True once the model is loaded and requests are accepted."""
        return self._accepting and self.reranker is not None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, reranker: Reranker | None = None) -> None:
        """Start the batching worker on ``reranker`` (or the one given at construction).
        Idempotent."""
        from finerank.engine.scheduler import BatchScheduler

        with self._lock:
            if self._accepting:
                return
            self.reranker = reranker or self.reranker
            if self.reranker is None:
                raise ServiceUnavailableError(
                    "no reranker loaded: build one with finerank.runtime.Runtime(settings)"
                )
            s = self.settings
            scheduler = BatchScheduler(
                self.reranker.engine,
                max_batch_tokens=s.max_batch_tokens,
                batch_wait_ms=s.batch_wait_ms,
                max_queue_pairs=s.max_queue_pairs,
            )
            for listener in self._listeners:
                scheduler.add_listener(listener)
            scheduler.start()
            self.scheduler = scheduler
            # One thread: tokenizers are not safe to call concurrently, and tokenizing off the
            # event loop keeps it responsive while a big request is prepared.
            self._prep = PrepareLane(self._prep_lock)
            self._accepting = True

    def stop(self, *, drain: bool = True) -> None:
        """Stop accepting; with ``drain`` finish queued work first. Idempotent."""
        with self._lock:
            self._accepting = False
            scheduler, prep = self.scheduler, self._prep
        if scheduler is not None:
            scheduler.stop(drain=drain)
        if prep is not None:
            prep.shutdown(wait=drain)

    def add_batch_listener(self, listener: Callable[[BatchStats], None]) -> None:
        """Call ``listener(stats)`` after each forward batch (metrics); works before start."""
        self._listeners.append(listener)
        if self.scheduler is not None:
            self.scheduler.add_listener(listener)

    @property
    def preparing(self) -> int:
        """Big requests being tokenized in steps right now."""
        return self._preparing

    @property
    def queued_pairs(self) -> int:
        return self.scheduler.queued_pairs if self.scheduler is not None else 0

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
        if top_n is not None:
            rank_results([], top_n)  # validates before any work
        self._check_count(len(documents) if isinstance(documents, Sequence) else 0, "documents")
        prepared = await self._prepare(
            query,
            documents,
            instruction=self.settings.instruction if instruction is None else instruction,
            long_document=long_document or self.settings.long_document,
            max_tokens_per_doc=max_tokens_per_doc,
        )
        logits = await self._submit(prepared.items)
        results = prepared.collect(logits, return_documents=return_documents)
        return RerankOutcome(rank_results(results, top_n), prepared.num_tokens, len(documents))

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
            prepared_groups.append(
                (positions, await self._prepare(query, docs, instruction=instruction))
            )
        total_tokens = sum(p.num_tokens for _, p in prepared_groups)
        self._check_tokens(total_tokens)
        logits = await self._submit([i for _, p in prepared_groups for i in p.items])
        results: list[ScoreResult | None] = [None] * len(documents)
        offset = 0
        for positions, prepared in prepared_groups:
            part = logits[offset : offset + len(prepared.items)]
            offset += len(prepared.items)
            for position, result in zip(positions, prepared.collect(part), strict=True):
                results[position] = ScoreResult(
                    index=position, score=result.score, logit=result.logit
                )
        return ScoreOutcome([r for r in results if r is not None], total_tokens)

    # ---- internals -------------------------------------------------------------------------
    def _require_ready(self) -> None:
        if not self.ready:
            raise ServiceUnavailableError(
                "the model is not loaded yet or the service is shutting down; retry shortly"
            )

    def _check_count(self, count: int, what: str) -> None:
        limit = self.settings.max_documents_per_request
        if count > limit:
            raise LimitExceededError(
                f"too many {what}: {count} > max_documents_per_request={limit}; split the request",
                limit_name="max_documents_per_request",
                limit=limit,
                value=count,
            )

    def _check_tokens(self, tokens: int, *, at_least: bool = False) -> None:
        limit = self.settings.max_tokens_per_request
        if tokens > limit:
            counted = f"more than {limit}" if at_least else str(tokens)
            raise LimitExceededError(
                f"request too long: {counted} tokens > max_tokens_per_request={limit}; send "
                "fewer or shorter documents (or set max_tokens_per_doc)",
                limit_name="max_tokens_per_request",
                limit=limit,
                value=tokens,
            )

    async def _prepare(self, query: str, documents: Sequence[str], **kwargs: Any):
        """Tokenize one request without holding up the others.

        Small requests tokenize inline when the tokenizer is free (well under a millisecond:
        two thread hand-offs would cost more on a busy CPU), else on the prepare lane ahead of
        any big request's remaining work. Big requests tokenize on the lane a step (~0.1 s)
        at a time, so the small ones wait at most one step, and stop as soon as they are
        known to be over ``max_tokens_per_request`` (a bound from the text's size tells when
        they cannot be, before any tokenizing).
        """
        self._require_ready()
        assert self.reranker is not None and self._prep is not None
        engine = self.reranker.engine
        lane = self._prep
        try:
            size = len(query) + sum(len(d) for d in documents if isinstance(d, str))
            if size <= INLINE_PREPARE_CHARS:
                if self._prep_lock.acquire(blocking=False):
                    try:
                        prepared = engine.prepare(query, documents, **kwargs)
                    finally:
                        self._prep_lock.release()
                else:
                    call = functools.partial(engine.prepare, query, documents, **kwargs)
                    prepared = await asyncio.wrap_future(lane.submit(call, urgent=True))
            else:
                prepared = await self._prepare_in_steps(lane, query, documents, **kwargs)
        except RuntimeError as exc:  # the lane shut down under us
            raise ServiceUnavailableError(f"the service is shutting down ({exc})") from None
        self._check_tokens(prepared.num_tokens)
        return prepared

    async def _prepare_in_steps(
        self, lane: PrepareLane, query: str, documents: Sequence[str], **kwargs: Any
    ):
        assert self.reranker is not None
        engine = self.reranker.engine
        bound_kwargs = {k: kwargs[k] for k in ("instruction", "long_document") if k in kwargs}
        guard = engine.token_upper_bound(query, documents, **bound_kwargs) > (
            self.settings.max_tokens_per_request
        )
        steps = engine.prepare_steps(query, documents, **kwargs)
        finished: list[PreparedRequest] = []
        self._preparing += 1

        def step() -> int | None:
            try:
                return next(steps)
            except StopIteration as done:
                finished.append(done.value)
                return None

        try:
            while True:
                tokens = await asyncio.wrap_future(lane.submit(step))
                if tokens is None:
                    return finished[0]
                if guard:
                    self._check_tokens(tokens, at_least=True)
        finally:
            self._preparing -= 1
            # Stopped early (limit, cancelled) the rest is never tokenized. The generator may
            # still be running its last step on the lane: close it there, after that step.
            with contextlib.suppress(RuntimeError):
                lane.submit(steps.close, urgent=True)

    async def _submit(self, items) -> list[float]:
        self._require_ready()
        assert self.scheduler is not None
        future = self.scheduler.submit(items)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The caller went away: the worker skips the job, or what is left of a cut one.
            self.scheduler.withdraw(future)
            raise
