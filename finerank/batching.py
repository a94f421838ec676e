"""The batching path every served model shares: limits, a tokenizer lane, a batching worker.

Like Infinity's engine array, each model finerank serves (the reranker, the embedder) sits behind
one :class:`BatchedService`: requests are tokenized without holding each other up (small ones
inline when the tokenizer is free, else first on the :class:`PrepareLane`; big ones on the lane
a step at a time, so a small request waits one step at most), then their prepared items share
token-budget forward passes on one worker thread
(:class:`~finerank.engine.scheduler.BatchScheduler`). A caller that goes away (its coroutine is
cancelled) withdraws its queued items before they run. The subclasses
(:class:`~finerank.service.RerankService`,
:class:`~finerank.retrieval.embedding_service.EmbeddingService`) only say what is
model-specific: what the scheduler runs, how one request is prepared (whole and in steps), and
how its outputs become an answer.

Example (a toy model: prepared items are ints, a run doubles them):
    >>> import asyncio
    >>> class Doubler:
    ...     max_batch_tokens = 64
    ...     def run(self, items):
    ...         return [2 * x for x in items]
    >>> class DoubleService(BatchedService):
    ...     def _batch_model(self, model):
    ...         return model
    ...     def _batch_costs(self):
    ...         return lambda items: [1] * len(items)
    ...     async def double(self, numbers):
    ...         self._check_count(len(numbers), "numbers")
    ...         return await self._submit(numbers)
    >>> service = DoubleService(model=Doubler())
    >>> service.start()
    >>> asyncio.run(service.double([1, 2, 3]))
    [2, 4, 6]
    >>> service.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from finerank.errors import LimitExceededError, ServiceUnavailableError
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.engine.scheduler import BatchModel, BatchScheduler, BatchStats

ModelT = TypeVar("ModelT")
PreparedT = TypeVar("PreparedT")

# Requests up to this many characters are tokenized in one go (on the event loop when the
# tokenizer is free: two thread hand-offs would cost more than tokenizing them); bigger ones in
# steps on the prepare lane.
INLINE_PREPARE_CHARS = 8192


class PrepareLane:
    """One thread that tokenizes, urgent work (small requests) first.

    Big requests submit one step at a time and queue the next only when it is done, so an
    urgent job submitted meanwhile runs before their next step. Jobs hold ``lock`` (shared
    with inline tokenizing on the event loop: tokenizers are not safe to call concurrently).
    """

    def __init__(self, lock: threading.Lock, *, name: str = "finerank-prepare"):
        self._lock = lock
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, func: Callable[[], Any], *, urgent: bool = False) -> Future:
        """Queue ``func``; :class:`ServiceUnavailableError` once the lane is stopped."""
        if self._closed:
            raise ServiceUnavailableError(
                "the service is shutting down (the prepare lane is stopped)"
            )
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


class BatchedService(Generic[ModelT]):
    """A served model behind a prepare lane and a batching worker (see the module docstring);
    safe to call from many coroutines at once.

    Args:
        settings: limits (``max_documents_per_request``, ``max_tokens_per_request``,
            ``max_queue_pairs``) and batching knobs (``max_batch_tokens``, ``batch_wait_ms``).
        model: the loaded model (or pass it to :meth:`start`).

    Subclasses give :meth:`_batch_model` (what the scheduler runs) and may give
    :meth:`_batch_costs`, the names below and the limit hint.
    """

    # the worker threads' names
    scheduler_name = "finerank-batcher"
    prepare_thread_name = "finerank-prepare"
    # the errors' words
    missing_model_message = "no model loaded"
    not_ready_message = "the model is not loaded yet or the service is shutting down; retry"
    token_limit_hint = "; send fewer or shorter inputs"

    def __init__(self, settings: Settings | None = None, *, model: ModelT | None = None):
        self.settings = settings or Settings()
        self.model: ModelT | None = model
        self.scheduler: BatchScheduler | None = None
        self._prep: PrepareLane | None = None
        self._lock = threading.Lock()
        self._prep_lock = threading.Lock()  # tokenizers are not safe to call concurrently
        self._preparing = 0
        self._listeners: list[Callable[[BatchStats], None]] = []
        self._accepting = False

    # ---- what differs per model ------------------------------------------------------------
    def _batch_model(self, model: ModelT) -> BatchModel:
        """What the scheduler's worker runs (``run(items)``, ``max_batch_tokens``)."""
        raise NotImplementedError

    def _batch_costs(self) -> Callable[[Sequence[Any]], list[int]] | None:
        """Tokens each prepared item costs in a run (None: the scheduler's default)."""
        return None

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the model is loaded and requests are accepted."""
        return self._accepting and self.model is not None

    def start(self, model: ModelT | None = None) -> None:
        """Start the batching worker on ``model`` (or the one given at construction).
        Idempotent."""
        from finerank.engine.scheduler import BatchScheduler

        with self._lock:
            if self._accepting:
                return
            self.model = model or self.model
            if self.model is None:
                raise ServiceUnavailableError(self.missing_model_message)
            s = self.settings
            scheduler = BatchScheduler(
                self._batch_model(self.model),
                max_batch_tokens=s.max_batch_tokens,
                batch_wait_ms=s.batch_wait_ms,
                max_queue_pairs=s.max_queue_pairs,
                costs=self._batch_costs(),
                name=self.scheduler_name,
            )
            for listener in self._listeners:
                scheduler.add_listener(listener)
            scheduler.start()
            self.scheduler = scheduler
            # One thread: tokenizers are not safe to call concurrently, and tokenizing off the
            # event loop keeps it responsive while a big request is prepared.
            self._prep = PrepareLane(self._prep_lock, name=self.prepare_thread_name)
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
        """Call ``listener(stats)`` after each forward run (metrics); works before start."""
        self._listeners.append(listener)
        if self.scheduler is not None:
            self.scheduler.add_listener(listener)

    @property
    def preparing(self) -> int:
        """Big requests being tokenized in steps right now."""
        return self._preparing

    @property
    def queued_pairs(self) -> int:
        """Items waiting for the model (not counting the run going now)."""
        return self.scheduler.queued_pairs if self.scheduler is not None else 0

    # ---- limits ----------------------------------------------------------------------------
    def _require_ready(self) -> None:
        if not self.ready:
            raise ServiceUnavailableError(self.not_ready_message)

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
                f"request too long: {counted} tokens > max_tokens_per_request={limit}"
                f"{self.token_limit_hint}",
                limit_name="max_tokens_per_request",
                limit=limit,
                value=tokens,
            )

    # ---- the batching path -----------------------------------------------------------------
    async def _prepare(
        self,
        size: int,
        whole: Callable[[], PreparedT],
        steps: Callable[[], Generator[int, None, PreparedT]],
        *,
        check_step: Callable[[int], None] | None = None,
    ) -> PreparedT:
        """Tokenize one request (``size`` characters) without holding up the others.

        Small requests run ``whole()`` inline when the tokenizer is free (well under a
        millisecond: two thread hand-offs would cost more on a busy CPU), else on the prepare
        lane ahead of any big request's remaining work. Big requests run ``steps()`` (a
        generator: each ``next()`` tokenizes a bounded part and yields the tokens so far,
        its return value is the prepared request) on the lane a step at a time, so the small
        ones wait at most one step; ``check_step(tokens)`` may raise after any step to stop
        early (the rest is never tokenized).
        """
        self._require_ready()
        assert self._prep is not None
        lane = self._prep
        if size > INLINE_PREPARE_CHARS:
            return await self._prepare_in_steps(lane, steps(), check_step)
        if self._prep_lock.acquire(blocking=False):
            try:
                return whole()
            finally:
                self._prep_lock.release()
        return await asyncio.wrap_future(lane.submit(whole, urgent=True))

    async def _prepare_in_steps(
        self,
        lane: PrepareLane,
        steps: Generator[int, None, PreparedT],
        check_step: Callable[[int], None] | None,
    ) -> PreparedT:
        finished: list[PreparedT] = []
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
                if check_step is not None:
                    check_step(tokens)
        finally:
            self._preparing -= 1
            # Stopped early (limit, cancelled) the rest is never tokenized. The generator may
            # still be running its last step on the lane: close it there, after that step.
            with contextlib.suppress(ServiceUnavailableError):
                lane.submit(steps.close, urgent=True)

    async def _submit(self, items: Sequence[Any]) -> list[Any]:
        """Queue prepared items for the batching worker; their outputs, in order."""
        self._require_ready()
        assert self.scheduler is not None
        future = self.scheduler.submit(items)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The caller went away: the worker skips the job, or what is left of a cut one.
            self.scheduler.withdraw(future)
            raise
