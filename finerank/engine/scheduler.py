"""Cross-request batching: many callers, one worker thread, shared token-budget batches.

The engine is not thread-safe and a forward pass is most efficient when full, so every
request's items go through one :class:`BatchScheduler`. Callers (usually asyncio handlers)
:meth:`~BatchScheduler.submit` the items of one prepared request and get a
``concurrent.futures.Future`` of its logits; the worker thread merges queued jobs (in arrival
order) up to ``max_batch_tokens`` and runs them as one ``engine.run`` call. A job whose future
was cancelled before the worker reached it (its client went away) is dropped without running.

Example:
    >>> scheduler = BatchScheduler(reranker.engine, max_batch_tokens=16384)  # doctest: +SKIP
    >>> scheduler.start()  # doctest: +SKIP
    >>> prepared = reranker.engine.prepare("query", ["doc a", "doc b"])  # doctest: +SKIP
    >>> logits = scheduler.submit(prepared.items).result()  # doctest: +SKIP
    >>> scheduler.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from finerank.errors import QueueFullError, ServiceUnavailableError
from finerank.models.base import EncodedPair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchStats:
    """What one merged forward run did (passed to batch listeners, e.g. metrics)."""

    jobs: int
    pairs: int
    tokens: int
    seconds: float


@dataclass
class _Job:
    items: Sequence[EncodedPair]
    future: Future
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(len(item.ids) for item in self.items)


class BatchScheduler:
    """A bounded queue of scoring jobs drained by one worker thread.

    ``max_queue_pairs`` bounds the pairs waiting (not yet running); a submit beyond it raises
    :class:`~finerank.errors.QueueFullError`, except into an empty queue, so one request larger
    than the bound can still run alone. ``batch_wait_ms`` is how long the worker waits for more
    jobs to fill a batch, and it only waits when the queue was busy (jobs arrived while the
    previous batch ran): a lone request under light load never pays the wait.
    """

    def __init__(
        self,
        engine,
        *,
        max_batch_tokens: int | None = None,
        batch_wait_ms: float = 2.0,
        max_queue_pairs: int = 20_000,
        retry_after_s: float = 1.0,
    ):
        self.engine = engine
        self.max_batch_tokens = max_batch_tokens or engine.max_batch_tokens
        self.batch_wait_s = max(0.0, batch_wait_ms) / 1000.0
        self.max_queue_pairs = max_queue_pairs
        self.retry_after_s = retry_after_s
        self._queue: deque[_Job] = deque()
        self._queued_pairs = 0
        self._running_jobs = 0
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._busy = False  # jobs arrived while the last batch ran
        self._listeners: list[Callable[[BatchStats], None]] = []
        self.dropped_jobs = 0
        self.dropped_pairs = 0

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._accepting = True
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="finerank-batcher", daemon=True)
            self._thread.start()

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting jobs; with ``drain`` run what is queued first, else fail it."""
        with self._cond:
            self._accepting = False
            if not drain:
                while self._queue:
                    job = self._queue.popleft()
                    self._queued_pairs -= len(job.items)
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(
                            ServiceUnavailableError("the service is shutting down; retry")
                        )
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queued_pairs(self) -> int:
        """Pairs waiting to run (not counting the batch running now)."""
        return self._queued_pairs

    @property
    def queued_jobs(self) -> int:
        return len(self._queue)

    def add_listener(self, listener: Callable[[BatchStats], None]) -> None:
        """Call ``listener(stats)`` from the worker thread after every batch."""
        self._listeners.append(listener)

    # ---- submission ----------------------------------------------------------------------
    def submit(self, items: Sequence[EncodedPair]) -> Future:
        """Queue one request's items; the future resolves to their logits, in order.

        Cancel the future to withdraw the job: if the worker has not started it, it never runs.
        """
        future: Future = Future()
        if not items:
            future.set_result([])
            return future
        job = _Job(items, future)
        with self._cond:
            if not self._accepting:
                raise ServiceUnavailableError(
                    "the service is not accepting requests (not started or shutting down)"
                )
            if self._queue and self._queued_pairs + len(items) > self.max_queue_pairs:
                raise QueueFullError(
                    f"queue full: {self._queued_pairs} pairs waiting, limit max_queue_pairs="
                    f"{self.max_queue_pairs}; retry after {self.retry_after_s:g}s",
                    retry_after_s=self.retry_after_s,
                )
            self._queue.append(job)
            self._queued_pairs += len(items)
            if self._running_jobs:
                self._busy = True
            self._cond.notify()
        return future

    # ---- worker --------------------------------------------------------------------------
    def _take_batch(self) -> list[_Job] | None:
        """Pop the next jobs to run together (None: stopped and drained)."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if self._busy and self.batch_wait_s > 0:
                deadline = time.monotonic() + self.batch_wait_s
                while self._queued_tokens_up_to_budget() < self.max_batch_tokens:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    self._cond.wait(remaining)
            self._busy = False
            batch: list[_Job] = []
            tokens = 0
            while self._queue:
                job = self._queue[0]
                if batch and tokens + job.tokens > self.max_batch_tokens:
                    break
                self._queue.popleft()
                self._queued_pairs -= len(job.items)
                # False: the caller cancelled while queued; its items are never run.
                if not job.future.set_running_or_notify_cancel():
                    self.dropped_jobs += 1
                    self.dropped_pairs += len(job.items)
                    continue
                batch.append(job)
                tokens += job.tokens
            self._running_jobs = len(batch)
            return batch

    def _queued_tokens_up_to_budget(self) -> int:
        total = 0
        for job in self._queue:
            total += job.tokens
            if total >= self.max_batch_tokens:
                break
        return total

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            self._run(batch)
            with self._cond:
                self._running_jobs = 0

    def _run(self, batch: list[_Job]) -> None:
        items = [item for job in batch for item in job.items]
        started = time.perf_counter()
        try:
            logits = self.engine.run(items)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear about it
            logger.exception("batch of %d pairs failed", len(items))
            for job in batch:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        offset = 0
        for job in batch:
            job.future.set_result(logits[offset : offset + len(job.items)])
            offset += len(job.items)
        stats = BatchStats(
            jobs=len(batch), pairs=len(items), tokens=sum(j.tokens for j in batch), seconds=seconds
        )
        for listener in self._listeners:
            try:
                listener(stats)
            except Exception:  # a broken listener must not stop scoring
                logger.exception("batch listener failed")
