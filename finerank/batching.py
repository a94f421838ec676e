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

Every request is timed in phases, as TEI does (:class:`RequestTimings`: tokenize, queue,
forward, total): a subclass starts a :class:`RequestClock` when a call comes in, hands it to
:meth:`BatchedService._prepare` and :meth:`BatchedService._submit`, and
:meth:`BatchedService._finish` turns it into the timings that it returns next to its answer
and that the request listeners (metrics) get.

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
    ...         clock = RequestClock()
    ...         self._check_count(len(numbers), "numbers")
    ...         doubled = await self._submit(numbers, clock=clock)
    ...         return doubled, self._finish(clock)
    >>> service = DoubleService(model=Doubler())
    >>> service.start()
    >>> doubled, timings = asyncio.run(service.double([1, 2, 3]))
    >>> doubled, timings.batches, 0 <= timings.queue_s + timings.forward_s <= timings.total_s
    ([2, 4, 6], 1, True)
    >>> service.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from finerank.errors import LimitExceededError, ServiceUnavailableError
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.engine.scheduler import BatchModel, BatchScheduler, BatchStats, JobTimes

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")
PreparedT = TypeVar("PreparedT")

# Requests up to this many characters are tokenized in one go (on the event loop when the
# tokenizer is free: two thread hand-offs would cost more than tokenizing them); bigger ones in
# steps on the prepare lane.
INLINE_PREPARE_CHARS = 8192


@dataclass(frozen=True)
class RequestTimings:
    """Where one request's time went, in seconds (TEI's per-request phases).

    - ``tokenize_s``: the tokenizer's work on the request (inline or on the prepare lane,
      summed over its steps; the wait for the lane is not in it).
    - ``queue_s``: from handing its items to the scheduler to the start of its first batch.
    - ``forward_s``: from the start of its first batch to the end of its last: the model time
      of the one batch that carried it, or, for a request cut over several batches
      (``batches`` > 1), that span, the other requests' batches in between included.
    - ``total_s``: from the call to its answer; at least the sum of the three (the rest is
      the wait for the tokenizer, checks and building the answer).

    Example:
        >>> RequestTimings(0.002, 0.001, 0.010, 0.014, batches=1).total_s
        0.014
    """

    tokenize_s: float
    queue_s: float
    forward_s: float
    total_s: float
    batches: int = 0


class RequestClock:
    """Adds up one request's phases while it goes through the batching path (start it when
    the call comes in; :meth:`BatchedService._finish` stops it).

    Example:
        >>> clock = RequestClock()
        >>> clock.timed(lambda: sum(range(1000)))()
        499500
        >>> timings = clock.stop()
        >>> 0 < timings.tokenize_s <= timings.total_s
        True
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.tokenize_s = 0.0
        self.queue_s = 0.0
        self.forward_s = 0.0
        self.batches = 0

    def timed(self, func: Callable[[], PreparedT]) -> Callable[[], PreparedT]:
        """``func``, its run time added to the tokenize phase (on whatever thread it runs)."""

        def run() -> PreparedT:
            began = time.perf_counter()
            try:
                return func()
            finally:
                self.tokenize_s += time.perf_counter() - began

        return run

    def ran(self, times: JobTimes) -> None:
        """Add a finished scheduler job's queue and forward time."""
        self.queue_s += times.queue_seconds
        self.forward_s += times.forward_seconds
        self.batches += times.batches

    def stop(self) -> RequestTimings:
        """The phases so far, and the total from the start."""
        return RequestTimings(
            tokenize_s=self.tokenize_s,
            queue_s=self.queue_s,
            forward_s=self.forward_s,
            total_s=time.perf_counter() - self.started,
            batches=self.batches,
        )


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
    :meth:`_batch_costs`, the names below and the limit hint. Their request methods time each
    request with a :class:`RequestClock` (see the module docstring).
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
        self._request_listeners: list[Callable[[RequestTimings], None]] = []
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
        Idempotent.

        When the model's next forward would compile kernels (bf16 on CPU, see
        :mod:`finerank.models.fused`), one short warm-up forward runs first (its
        ``warm_up()``), so the service is ready only once compiling is done and no request
        pays for it."""
        from finerank.engine.scheduler import BatchScheduler

        with self._lock:
            if self._accepting:
                return
            self.model = model or self.model
            if self.model is None:
                raise ServiceUnavailableError(self.missing_model_message)
            s = self.settings
            batch_model = self._batch_model(self.model)
            warm_up = getattr(batch_model, "warm_up", None)
            if warm_up is not None:
                warm_up()
            scheduler = BatchScheduler(
                batch_model,
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

    def add_request_listener(self, listener: Callable[[RequestTimings], None]) -> None:
        """Call ``listener(timings)`` once per answered request (metrics); failed requests
        are not timed. Called on the thread that answers (the event loop, or the caller's
        thread for the blocking embedder interface): keep it cheap."""
        self._request_listeners.append(listener)

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
        clock: RequestClock | None = None,
    ) -> PreparedT:
        """Tokenize one request (``size`` characters) without holding up the others.

        Small requests run ``whole()`` inline when the tokenizer is free (well under a
        millisecond: two thread hand-offs would cost more on a busy CPU), else on the prepare
        lane ahead of any big request's remaining work. Big requests run ``steps()`` (a
        generator: each ``next()`` tokenizes a bounded part and yields the tokens so far,
        its return value is the prepared request) on the lane a step at a time, so the small
        ones wait at most one step; ``check_step(tokens)`` may raise after any step to stop
        early (the rest is never tokenized). The tokenizer's time goes to ``clock``.
        """
        self._require_ready()
        assert self._prep is not None
        lane = self._prep
        if size > INLINE_PREPARE_CHARS:
            return await self._prepare_in_steps(lane, steps(), check_step, clock)
        if clock is not None:
            whole = clock.timed(whole)
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
        clock: RequestClock | None,
    ) -> PreparedT:
        finished: list[PreparedT] = []
        self._preparing += 1

        def step() -> int | None:
            try:
                return next(steps)
            except StopIteration as done:
                finished.append(done.value)
                return None

        if clock is not None:
            step = clock.timed(step)
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

    async def _submit(
        self, items: Sequence[Any], *, clock: RequestClock | None = None
    ) -> list[Any]:
        """Queue prepared items for the batching worker; their outputs, in order (their queue
        and forward time go to ``clock``)."""
        self._require_ready()
        assert self.scheduler is not None
        future = self.scheduler.submit(items)
        try:
            outputs = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The caller went away: the worker skips the job, or what is left of a cut one.
            self.scheduler.withdraw(future)
            raise
        if clock is not None:
            clock.ran(future.times)
        return outputs

    def _finish(self, clock: RequestClock) -> RequestTimings:
        """Stop ``clock`` once the answer is built; the request listeners get its timings."""
        timings = clock.stop()
        for listener in self._request_listeners:
            try:
                listener(timings)
            except Exception:  # a broken listener must not fail the request
                logger.exception("request listener failed")
        return timings
