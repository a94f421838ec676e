"""The embedding service: one loaded embedder behind the same batching path as the reranker.

``/v1/embeddings``, query embeddings of searches and the embeddings of ingested chunks all go
through one :class:`EmbeddingService`, on the batching path every served model shares
(:class:`~finerank.batching.BatchedService`): requests are tokenized (each text cut to what the
model reads *before* tokenizing) on a helper thread, big ones in slices so a small request is
never queued behind a big one's tokenization; their inputs then share token-budget forward
passes on one worker thread (:class:`~finerank.engine.scheduler.BatchScheduler`: cross-request
batching, fair cuts of big jobs, out-of-memory halving, a failed merged run re-run request by
request).

The service also stands in for its embedder where an ``embedder`` is expected
(``name``, ``dimension``, ``source``, :meth:`EmbeddingService.embed_documents`,
:meth:`EmbeddingService.embed_queries`), so ingest and search calls from worker threads use the
same scheduler.

Example (the tiny test embedder of ``finerank make-test-model ./tiny-qwen3-emb --kind
qwen3-embedding``; servers get the service from :class:`~finerank.runtime.Runtime`):
    >>> import asyncio
    >>> from finerank.runtime import build_embedder
    >>> settings = Settings(embedding_model="./tiny-qwen3-emb", device="cpu")
    >>> service = EmbeddingService(settings)
    >>> service.start(build_embedder(settings))
    >>> outcome = asyncio.run(service.embed(["hello", "world"]))
    >>> outcome.vectors.shape, outcome.prompt_tokens
    ((2, 64), 4)
    >>> service.stop()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from finerank.batching import BatchedService, RequestClock, RequestTimings
from finerank.errors import InvalidInputError, ServiceUnavailableError, UnknownModelError
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.retrieval.embedder import Embedder, EmbeddingInput, InputType

logger = logging.getLogger(__name__)

# Requests bigger than finerank.batching.INLINE_PREPARE_CHARS are tokenized in slices of about
# this many characters, each its own step on the prepare lane, so small requests get in between.
PREPARE_SLICE_CHARS = 64 * 1024


@dataclass(frozen=True)
class EmbeddingOutcome:
    """Unit vectors (``[len(texts), dimension]`` float32), the tokens the model read and where
    the request's time went (``timings``: tokenize, queue, forward, total)."""

    vectors: np.ndarray
    prompt_tokens: int
    timings: RequestTimings


class EmbeddingService(BatchedService["Embedder"]):
    """An embedder plus a batching worker, safe to call from many coroutines and threads.

    The lifecycle (:meth:`start`, :meth:`stop`, :attr:`ready`, :meth:`add_batch_listener`) and
    the batching path are :class:`~finerank.batching.BatchedService`'s, shared with the
    reranker's service.

    Args:
        settings: limits (``max_documents_per_request``, ``max_tokens_per_request``,
            ``max_queue_pairs``) and batching knobs (``max_batch_tokens``, ``batch_wait_ms``).
        embedder: the loaded embedder (or pass it to :meth:`start`).
    """

    scheduler_name = "finerank-embedder"
    prepare_thread_name = "finerank-embed-prepare"
    missing_model_message = "no embedding model loaded"
    not_ready_message = (
        "the embedding model is not loaded yet or the service is shutting down; retry"
    )
    token_limit_hint = " (each input counts up to the model's length); send fewer or shorter inputs"

    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None):
        super().__init__(settings, model=embedder)

    def _batch_model(self, model: Embedder) -> Embedder:
        return model

    def _batch_costs(self) -> Callable[[Sequence[EmbeddingInput]], list[int]]:
        from finerank.retrieval.embedder import input_cost

        return lambda items: [input_cost(item) for item in items]

    @property
    def embedder(self) -> Embedder | None:
        """The loaded embedder (None before :meth:`start` when none was given)."""
        return self.model

    # ---- identity (what a collection records) -----------------------------------------------
    def _model(self) -> Embedder:
        if self.model is None:
            raise ServiceUnavailableError("the embedding model is not loaded yet; retry shortly")
        return self.model

    @property
    def name(self) -> str:
        return self._model().name

    @property
    def dimension(self) -> int:
        return self._model().dimension

    @property
    def source(self) -> str:
        return self._model().source

    @property
    def served_names(self) -> list[str]:
        """Every name a request's ``model`` may carry: the model's name, then its source."""
        names = [self.name]
        for other in (self.settings.embedding_model, self.source):
            if other and other not in names:
                names.append(other)
        return names

    def check_model(self, name: str | None) -> None:
        """Raise :class:`UnknownModelError` unless ``name`` is empty or a served name."""
        if name and name not in self.served_names:
            raise UnknownModelError(
                f"embedding model {name!r} is not served here; served embedding model: "
                f"{self.name!r}"
            )

    # ---- requests --------------------------------------------------------------------------
    async def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        instruction: str | None = None,
        dimensions: int | None = None,
        check_limits: bool = True,
    ) -> EmbeddingOutcome:
        """Embed one request's ``texts``, batched with concurrent requests.

        Same vectors as the embedder's own :meth:`~finerank.retrieval.embedder.Embedder.embed`.
        Raises :class:`InvalidInputError` (bad values), :class:`LimitExceededError`
        (``max_documents_per_request`` inputs, ``max_tokens_per_request`` tokens),
        :class:`~finerank.errors.QueueFullError`, :class:`ServiceUnavailableError`.
        ``check_limits=False`` skips the per-request limits (finerank's own calls: query
        embeddings of searches, chunks of an ingest).

        Example:
            >>> outcome = await service.embed(["q"], input_type="query")  # doctest: +SKIP
        """
        clock = RequestClock()
        self._require_ready()
        embedder = self._model()
        texts = self._check_request(texts, check_limits)
        embedder.check_dimensions(dimensions)

        def whole() -> list[EmbeddingInput]:
            return embedder.prepare(texts, input_type=input_type, instruction=instruction)

        def steps() -> Generator[int, None, list[EmbeddingInput]]:
            return _prepare_in_slices(embedder, texts, input_type, instruction)

        # Each input is cut to the model's length before tokenizing, so the request is bounded
        # by its count: the token limit is checked once, on the exact count, not per slice.
        items = await self._prepare(sum(len(text) for text in texts), whole, steps, clock=clock)
        tokens = sum(item.cost for item in items)
        if check_limits:
            self._check_tokens(tokens)
        rows = await self._submit(items, clock=clock)
        vectors = embedder.finish(rows, dimensions)
        return EmbeddingOutcome(vectors, tokens, self._finish(clock))

    def _check_request(self, texts: Sequence[str], check_limits: bool) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise InvalidInputError("input must hold at least one text")
        if check_limits:
            self._check_count(len(texts), "inputs")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"input[{index}] must be a string, got {type(text).__name__} (send text, "
                    "not token ids)"
                )
            if not text:
                raise InvalidInputError(f"input[{index}] is empty")
        return texts

    # ---- the embedder interface, for worker threads (ingest, sync search) --------------------
    def _embed_blocking(
        self,
        texts: Sequence[str],
        input_type: InputType,
        instruction: str | None,
        dimensions: int | None,
    ) -> np.ndarray:
        clock = RequestClock()
        self._require_ready()
        assert self.scheduler is not None
        embedder = self._model()
        embedder.check_dimensions(dimensions)

        def prepare() -> list[EmbeddingInput]:
            return embedder.prepare(list(texts), input_type=input_type, instruction=instruction)

        with self._prep_lock:  # on this worker thread, not the lane: it may block
            items = clock.timed(prepare)()
        future = self.scheduler.submit(items)
        rows = future.result()
        clock.ran(future.times)
        vectors = embedder.finish(rows, dimensions)
        self._finish(clock)
        return vectors

    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        """Like :meth:`Embedder.embed_documents`, through the batching worker (blocking; call
        it from a worker thread, never from the event loop)."""
        return self._embed_blocking(texts, "document", None, dimensions)

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Like :meth:`Embedder.embed_queries`, through the batching worker (blocking)."""
        return self._embed_blocking(texts, "query", instruction, dimensions)


def _prepare_in_slices(
    embedder: Embedder, texts: list[str], input_type: InputType, instruction: str | None
) -> Generator[int, None, list[EmbeddingInput]]:
    """``embedder.prepare(texts)`` a slice of about ``PREPARE_SLICE_CHARS`` characters per
    ``next()``, yielding the tokens so far; returns the prepared inputs, in order."""
    items: list[EmbeddingInput] = []
    tokens = 0
    for part in _slices(texts, PREPARE_SLICE_CHARS):
        prepared = embedder.prepare(part, input_type=input_type, instruction=instruction)
        items += prepared
        tokens += sum(item.cost for item in prepared)
        yield tokens
    return items


def _slices(texts: list[str], chars: int) -> list[list[str]]:
    """Consecutive groups of texts holding about ``chars`` characters each."""
    groups: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if groups[-1] and size + len(text) > chars:
            groups.append([])
            size = 0
        groups[-1].append(text)
        size += len(text)
    return groups
