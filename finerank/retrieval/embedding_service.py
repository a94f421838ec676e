"""The embedding service: one loaded embedder behind the same batching path as the reranker.

``/v1/embeddings``, query embeddings of searches and the embeddings of ingested chunks all go
through one :class:`EmbeddingService`: requests are tokenized (each text cut to what the model
reads *before* tokenizing) on a helper thread, big ones in slices so a small request is never
queued behind a big one's tokenization; their inputs then share token-budget forward passes on
one worker thread (:class:`~finerank.engine.scheduler.BatchScheduler`: cross-request batching,
fair cuts of big jobs, out-of-memory halving, a failed merged run re-run request by request).

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

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from finerank.errors import (
    InvalidInputError,
    LimitExceededError,
    ServiceUnavailableError,
    UnknownModelError,
)
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.engine.scheduler import BatchScheduler, BatchStats
    from finerank.retrieval.embedder import Embedder, EmbeddingInput, InputType

logger = logging.getLogger(__name__)

# Requests with at most this many characters are tokenized on the caller's thread when the
# tokenizer is free (two thread hand-offs cost more than tokenizing a query).
INLINE_PREPARE_CHARS = 8192
# Bigger requests are tokenized in slices of about this many characters, each its own task on
# the helper thread, so small requests get in between.
PREPARE_SLICE_CHARS = 64 * 1024


@dataclass(frozen=True)
class EmbeddingOutcome:
    """Unit vectors (``[len(texts), dimension]`` float32) and the tokens the model read."""

    vectors: np.ndarray
    prompt_tokens: int


class EmbeddingService:
    """An embedder plus a batching worker, safe to call from many coroutines and threads.

    Args:
        settings: limits (``max_documents_per_request``, ``max_tokens_per_request``,
            ``max_queue_pairs``) and batching knobs (``max_batch_tokens``, ``batch_wait_ms``).
        embedder: the loaded embedder (or pass it to :meth:`start`).
    """

    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None):
        self.settings = settings or Settings()
        self.embedder: Embedder | None = embedder
        self.scheduler: BatchScheduler | None = None
        self._prep: ThreadPoolExecutor | None = None
        self._prep_lock = threading.Lock()  # tokenizers are not safe to call concurrently
        self._lock = threading.Lock()
        self._listeners: list[Callable[[BatchStats], None]] = []
        self._accepting = False

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, embedder: Embedder | None = None) -> None:
        """Start the batching worker on ``embedder`` (or the one given at construction)."""
        from finerank.engine.scheduler import BatchScheduler
        from finerank.retrieval.embedder import input_cost

        with self._lock:
            if self._accepting:
                return
            self.embedder = embedder or self.embedder
            if self.embedder is None:
                raise ServiceUnavailableError("no embedding model loaded")
            s = self.settings
            scheduler = BatchScheduler(
                self.embedder,
                max_batch_tokens=s.max_batch_tokens,
                batch_wait_ms=s.batch_wait_ms,
                max_queue_pairs=s.max_queue_pairs,
                costs=lambda items: [input_cost(item) for item in items],
                name="finerank-embedder",
            )
            for listener in self._listeners:
                scheduler.add_listener(listener)
            scheduler.start()
            self.scheduler = scheduler
            self._prep = ThreadPoolExecutor(1, thread_name_prefix="finerank-embed-prepare")
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

    @property
    def ready(self) -> bool:
        return self._accepting

    def add_batch_listener(self, listener: Callable[[BatchStats], None]) -> None:
        """Call ``listener(stats)`` after each forward run (metrics); works before start."""
        self._listeners.append(listener)
        if self.scheduler is not None:
            self.scheduler.add_listener(listener)

    # ---- identity (what a collection records) -----------------------------------------------
    def _model(self) -> Embedder:
        if self.embedder is None:
            raise ServiceUnavailableError("the embedding model is not loaded yet; retry shortly")
        return self.embedder

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
        self._require_ready()
        embedder = self._model()
        texts = self._check_request(texts, check_limits)
        embedder.check_dimensions(dimensions)
        items = await self._prepare(texts, input_type, instruction)
        tokens = sum(item.cost for item in items)
        limit = self.settings.max_tokens_per_request
        if check_limits and tokens > limit:
            raise LimitExceededError(
                f"request too long: {tokens} tokens > max_tokens_per_request={limit} (each "
                "input counts up to the model's length); send fewer or shorter inputs",
                limit_name="max_tokens_per_request",
                limit=limit,
                value=tokens,
            )
        rows = await self._submit(items)
        return EmbeddingOutcome(embedder.finish(rows, dimensions), tokens)

    def _check_request(self, texts: Sequence[str], check_limits: bool) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise InvalidInputError("input must hold at least one text")
        limit = self.settings.max_documents_per_request
        if check_limits and len(texts) > limit:
            raise LimitExceededError(
                f"too many inputs: {len(texts)} > max_documents_per_request={limit}; split "
                "the request",
                limit_name="max_documents_per_request",
                limit=limit,
                value=len(texts),
            )
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"input[{index}] must be a string, got {type(text).__name__} (send text, "
                    "not token ids)"
                )
            if not text:
                raise InvalidInputError(f"input[{index}] is empty")
        return texts

    async def _prepare(
        self, texts: list[str], input_type: InputType, instruction: str | None
    ) -> list[EmbeddingInput]:
        embedder = self._model()
        size = sum(len(text) for text in texts)
        if size <= INLINE_PREPARE_CHARS and self._prep_lock.acquire(blocking=False):
            try:
                return embedder.prepare(texts, input_type=input_type, instruction=instruction)
            finally:
                self._prep_lock.release()
        loop = asyncio.get_running_loop()
        items: list[EmbeddingInput] = []
        for part in _slices(texts, PREPARE_SLICE_CHARS):
            try:
                items += await loop.run_in_executor(
                    self._prep, self._prepare_locked, part, input_type, instruction
                )
            except RuntimeError as exc:  # the executor was shut down under us
                raise ServiceUnavailableError(f"the service is shutting down ({exc})") from None
        return items

    def _prepare_locked(
        self, texts: list[str], input_type: InputType, instruction: str | None
    ) -> list[EmbeddingInput]:
        with self._prep_lock:
            return self._model().prepare(texts, input_type=input_type, instruction=instruction)

    async def _submit(self, items: list[EmbeddingInput]) -> list[np.ndarray]:
        self._require_ready()
        assert self.scheduler is not None
        future = self.scheduler.submit(items)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.scheduler.withdraw(future)  # the caller went away: skip what has not run
            raise

    def _require_ready(self) -> None:
        if not self.ready:
            raise ServiceUnavailableError(
                "the embedding model is not loaded yet or the service is shutting down; retry"
            )

    # ---- the embedder interface, for worker threads (ingest, sync search) --------------------
    def _embed_blocking(
        self,
        texts: Sequence[str],
        input_type: InputType,
        instruction: str | None,
        dimensions: int | None,
    ) -> np.ndarray:
        self._require_ready()
        assert self.scheduler is not None
        embedder = self._model()
        embedder.check_dimensions(dimensions)
        items = self._prepare_locked(list(texts), input_type, instruction)
        future: Future = self.scheduler.submit(items)
        return embedder.finish(future.result(), dimensions)

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
