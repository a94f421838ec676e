"""Cross-request batching: many callers, one worker thread, shared token-budget batches.

Every model finerank serves (the reranker's :class:`~finerank.engine.engine.ScoringEngine`,
each embedder) sits behind one :class:`BatchScheduler`, like the engine array of Infinity:
callers (usually asyncio handlers) :meth:`~BatchScheduler.submit` the prepared items of one
request and get a ``concurrent.futures.Future`` of one output per item; the worker thread
merges queued jobs (in arrival order) into runs of up to ``max_batch_tokens`` tokens and calls
``model.run(items)`` once per run. The model is anything with that method (it plans its own
packs inside the run): the scheduler never looks inside an item except to count its tokens.

- **Fair to small requests.** A job larger than what is left of the budget is cut: its first
  items run now and the rest waits behind the jobs that arrived meanwhile, so a small request
  never waits for more than one run of a huge one.
- **Only the bad request fails.** When a merged run raises, each job in it is re-run alone;
  the jobs that succeed get their answers and only the failing one gets the error.
- **OOM halving.** A run that raises ``torch.OutOfMemoryError`` is split in halves and
  retried (recursively), so memory pressure never drops an item.
- **Cancellation.** A job whose future was cancelled before the worker reached it (its client
  went away) is dropped without running; :meth:`~BatchScheduler.withdraw` also stops the rest
  of a job that was cut and has started.
- **Per-job times.** The future of a job (a :class:`JobFuture`) carries its :class:`JobTimes`:
  when it was submitted, when its first batch started and its last batch ended (written once
  per job and run, never per item), set before its result.

Example:
    >>> scheduler = BatchScheduler(reranker.engine, max_batch_tokens=16384)  # doctest: +SKIP
    >>> scheduler.start()  # doctest: +SKIP
    >>> prepared = reranker.engine.prepare("query", ["doc a", "doc b"])  # doctest: +SKIP
    >>> future = scheduler.submit(prepared.items)  # doctest: +SKIP
    >>> logits = future.result()  # doctest: +SKIP
    >>> future.times.queue_seconds, future.times.forward_seconds  # doctest: +SKIP
    (2.1e-05, 0.0031)
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
from typing import Any, Protocol

from finerank.errors import QueueFullError, ServiceUnavailableError
from finerank.models import allocator

logger = logging.getLogger(__name__)


class BatchModel(Protocol):
    """What the scheduler drives: one call runs many prepared items (one output each)."""

    max_batch_tokens: int

    def run(self, items: Sequence[Any]) -> Sequence[Any]: ...


def token_count(items: Sequence[Any]) -> list[int]:
    """Tokens of each encoded item (``len(item.ids)``)."""
    return [len(item.ids) for item in items]


def prefix_shared_token_count(items: Sequence[Any]) -> list[int]:
    """Tokens each item adds to a pack when items with the same ``share_key`` share their
    common prefix (computed once per pack, as the engine packs them).

    Example:
        >>> from finerank.models.base import EncodedPair
        >>> prefix_shared_token_count([EncodedPair(tuple(range(20)), "q"),
        ...                            EncodedPair(tuple(range(18)) + (7, 7), "q")])
        [20, 2]
    """
    from finerank.engine.packing import MIN_SHARED_PREFIX, common_prefix_length

    groups: dict[object, list[int]] = {}
    for index, item in enumerate(items):
        if item.share_key is not None:
            groups.setdefault(item.share_key, []).append(index)
    costs = [len(item.ids) for item in items]
    for members in groups.values():
        if len(members) < 2:
            continue
        shared = common_prefix_length([items[i].ids for i in members])
        if shared >= MIN_SHARED_PREFIX:
            for i in members[1:]:
                costs[i] -= shared
    return costs


def run_halving(run: Callable[[Sequence[Any]], Sequence[Any]], items: Sequence[Any]) -> list[Any]:
    """``run(items)``; on ``torch.OutOfMemoryError`` run each half (recursively) instead, so
    memory pressure never drops an item. One item that does not fit raises.

    Example:
        >>> run_halving(lambda items: [2 * x for x in items], [1, 2, 3])
        [2, 4, 6]
    """
    try:
        outputs = run(items)
    except Exception as exc:
        if not _is_out_of_memory(exc) or len(items) < 2:
            raise
        _free_cuda_cache()
        half = len(items) // 2
        logger.warning("out of memory on %d items: retrying in two halves", len(items))
        return [*run_halving(run, items[:half]), *run_halving(run, items[half:])]
    if len(outputs) != len(items):
        raise RuntimeError(f"the model returned {len(outputs)} outputs for {len(items)} items")
    return list(outputs)


@dataclass(frozen=True)
class BatchStats:
    """What one merged forward run did (passed to batch listeners, e.g. metrics): ``tokens``
    counts every item's input tokens (a shared prefix once per item, as billed)."""

    jobs: int
    pairs: int
    tokens: int
    seconds: float


@dataclass
class JobTimes:
    """When one job was submitted, its first batch started and its last batch ended
    (``time.perf_counter()`` seconds), and how many batches carried its items.

    Example:
        >>> times = JobTimes(submitted=10.0, first_batch_start=10.5, last_batch_end=12.0)
        >>> times.queue_seconds, times.forward_seconds
        (0.5, 1.5)
    """

    submitted: float
    first_batch_start: float | None = None
    last_batch_end: float | None = None
    batches: int = 0

    @property
    def queue_seconds(self) -> float:
        """From the submit to the start of the job's first batch (0 if it never ran)."""
        if self.first_batch_start is None:
            return 0.0
        return self.first_batch_start - self.submitted

    @property
    def forward_seconds(self) -> float:
        """From the start of the job's first batch to the end of its last: the model time of
        the one batch that carried it, or, for a job cut over several batches, that span
        (the batches of other jobs that ran in between included). 0 if it never ran."""
        if self.first_batch_start is None or self.last_batch_end is None:
            return 0.0
        return self.last_batch_end - self.first_batch_start


class JobFuture(Future):
    """The future of one submitted job, with its :class:`JobTimes` (``times``), complete
    once the future is done with a result."""

    def __init__(self) -> None:
        super().__init__()
        self.times = JobTimes(submitted=time.perf_counter())


@dataclass
class _Job:
    items: Sequence[Any]
    costs: list[int]  # what each item adds to a run (shared prefixes counted once)
    future: JobFuture
    outputs: list[Any] = field(init=False)
    next_item: int = 0  # items before this one are taken (running or done)
    done_items: int = 0
    started: bool = False
    withdrawn: bool = False

    def __post_init__(self) -> None:
        self.outputs = [None] * len(self.items)

    @property
    def tokens(self) -> int:
        return sum(self.costs)

    @property
    def waiting_items(self) -> int:
        return len(self.items) - self.next_item


@dataclass
class _Slice:
    job: _Job
    start: int
    end: int

    @property
    def items(self) -> Sequence[Any]:
        return self.job.items[self.start : self.end]

    @property
    def input_tokens(self) -> int:
        return sum(
            len(getattr(item, "ids", ())) or cost
            for item, cost in zip(self.items, self.job.costs[self.start : self.end], strict=True)
        )


class BatchScheduler:
    """A bounded queue of jobs drained by one worker thread (see the module docstring).

    Args:
        model: a :class:`BatchModel` (``run(items)`` plus ``max_batch_tokens``).
        max_batch_tokens: token budget of one run (default: the model's).
        batch_wait_ms: how long the worker waits for more jobs to fill a run; it only waits
            when the queue was busy (jobs arrived while the previous run was going), so a lone
            request under light load never pays the wait.
        max_queue_pairs: items waiting (not yet running) beyond which a submit raises
            :class:`~finerank.errors.QueueFullError`, except into an empty queue, so one
            request larger than the bound can still run alone.
        costs: tokens each item of one job costs in a run (default: with the prefix shared
            when the model shares prefixes, :func:`prefix_shared_token_count`, else
            :func:`token_count`).
    """

    def __init__(
        self,
        model: BatchModel,
        *,
        max_batch_tokens: int | None = None,
        batch_wait_ms: float = 2.0,
        max_queue_pairs: int = 20_000,
        retry_after_s: float = 1.0,
        costs: Callable[[Sequence[Any]], list[int]] | None = None,
        name: str = "finerank-batcher",
    ):
        self.engine = model  # the rerank path calls its model "engine"
        self.model = model
        self.max_batch_tokens = max_batch_tokens or model.max_batch_tokens
        self.batch_wait_s = max(0.0, batch_wait_ms) / 1000.0
        self.max_queue_pairs = max_queue_pairs
        self.retry_after_s = retry_after_s
        if costs is None:
            shares = getattr(model, "share_prefix", False)
            costs = prefix_shared_token_count if shares else token_count
        self.costs = costs
        self.name = name
        self._queue: deque[_Job] = deque()
        self._queued_pairs = 0
        self._running = False
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._busy = False  # jobs arrived while the last run was going
        self._released_idle = True  # no run since this worker last went idle
        self._listeners: list[Callable[[BatchStats], None]] = []
        self.dropped_jobs = 0
        self.dropped_pairs = 0
        self.runs = 0  # model.run calls, retries included

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._accepting = True
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting jobs; with ``drain`` run what is queued first, else fail it."""
        with self._cond:
            self._accepting = False
            if not drain:
                while self._queue:
                    job = self._queue.popleft()
                    self._queued_pairs -= job.waiting_items
                    self._fail(job, ServiceUnavailableError("the service is shutting down; retry"))
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
        """Items waiting to run (not counting the run going now)."""
        return self._queued_pairs

    @property
    def queued_jobs(self) -> int:
        return len(self._queue)

    def add_listener(self, listener: Callable[[BatchStats], None]) -> None:
        """Call ``listener(stats)`` from the worker thread after every run (before its answers
        are delivered, so a caller with its answer sees its batches counted)."""
        self._listeners.append(listener)

    # ---- submission ----------------------------------------------------------------------
    def submit(self, items: Sequence[Any]) -> JobFuture:
        """Queue one request's items; the future resolves to their outputs, in order, and
        carries the job's :class:`JobTimes` (``future.times``).

        Cancel the future to withdraw the job: if the worker has not started it, it never runs
        (see :meth:`withdraw` for a job that has started).
        """
        future = JobFuture()
        if not items:
            future.set_result([])
            return future
        job = _Job(items, self.costs(items), future)
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
            if self._running:
                self._busy = True
            self._cond.notify()
        return future

    def withdraw(self, future: Future) -> None:
        """Drop what has not run yet of the job behind ``future`` (its caller went away)."""
        if future.cancel():
            return  # never started: the worker skips it
        with self._cond:
            for job in self._queue:
                if job.future is future:
                    job.withdrawn = True

    # ---- worker --------------------------------------------------------------------------
    def _take_batch(self) -> list[_Slice] | None:
        """The next run: slices of queued jobs within the budget (None: stopped, drained)."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                # once idle for a while, give the forwards' freed heap memory back (once)
                wait = None if self._released_idle else allocator.IDLE_RELEASE_S
                if not self._cond.wait(wait):
                    self._released_idle = True
                    self._cond.release()  # submitters need not wait for the release
                    try:
                        allocator.release_when_idle()
                    finally:
                        self._cond.acquire()
            if self._busy and self.batch_wait_s > 0:
                deadline = time.monotonic() + self.batch_wait_s
                while self._queued_tokens_up_to_budget() < self.max_batch_tokens:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    self._cond.wait(remaining)
            self._busy = False
            batch: list[_Slice] = []
            tokens = 0
            while self._queue and tokens < self.max_batch_tokens:
                job = self._queue[0]
                if job.withdrawn or (not job.started and not self._begin(job)):
                    self._queue.popleft()
                    self._drop(job)
                    continue
                start = end = job.next_item
                while end < len(job.items) and (
                    tokens + job.costs[end] <= self.max_batch_tokens or not batch and end == start
                ):
                    tokens += job.costs[end]
                    end += 1
                if end == start:
                    break  # the budget is full
                batch.append(_Slice(job, start, end))
                job.next_item = end
                self._queued_pairs -= end - start
                self._queue.popleft()
                if job.waiting_items:
                    # The rest of a cut job waits behind the jobs already queued.
                    self._queue.append(job)
                    break
            self._running = bool(batch)
            return batch

    def _begin(self, job: _Job) -> bool:
        """Mark a job running; False when its caller cancelled it while it was queued."""
        job.started = job.future.set_running_or_notify_cancel()
        return job.started

    def _drop(self, job: _Job) -> None:
        self._queued_pairs -= job.waiting_items
        self.dropped_jobs += 1
        self.dropped_pairs += job.waiting_items
        if job.started and not job.future.done():
            job.future.set_exception(ServiceUnavailableError("the request was withdrawn"))

    def _queued_tokens_up_to_budget(self) -> int:
        total = 0
        for job in self._queue:
            total += sum(job.costs[job.next_item :])
            if total >= self.max_batch_tokens:
                break
        return total

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)
            with self._cond:
                self._running = False

    def _run(self, batch: list[_Slice]) -> None:
        items = [item for part in batch for item in part.items]
        started = time.perf_counter()
        for part in batch:  # per job, not per item: the hot path stays cheap
            times = part.job.future.times
            if times.first_batch_start is None:
                times.first_batch_start = started
        self._released_idle = False
        try:
            with allocator.model_run():
                outputs = self._run_items(items)
        except Exception as exc:  # noqa: BLE001 - isolated below, or given to the one caller
            if len(batch) == 1:
                logger.error("a run of %d items failed: %s", len(items), exc)
                self._fail(batch[0].job, exc)
                return
            logger.warning(
                "a run merging %d requests failed (%s); re-running each alone", len(batch), exc
            )
            for part in batch:
                self._run([part])
            return
        ended = time.perf_counter()
        stats = BatchStats(
            jobs=len(batch),
            pairs=len(items),
            tokens=sum(part.input_tokens for part in batch),
            seconds=ended - started,
        )
        # Listeners first: a caller that has its answer sees the metrics of its batches.
        for listener in self._listeners:
            try:
                listener(stats)
            except Exception:  # a broken listener must not stop scoring
                logger.exception("batch listener failed")
        offset = 0
        for part in batch:
            count = part.end - part.start
            times = part.job.future.times
            times.last_batch_end = ended
            times.batches += 1
            self._deliver(part, outputs[offset : offset + count])
            offset += count

    def _run_items(self, items: Sequence[Any]) -> list[Any]:
        def counted(part: Sequence[Any]) -> Sequence[Any]:
            self.runs += 1
            return self.model.run(part)

        return run_halving(counted, items)

    def _deliver(self, part: _Slice, outputs: Sequence[Any]) -> None:
        job = part.job
        if job.future.done():  # failed or withdrawn meanwhile
            return
        job.outputs[part.start : part.end] = list(outputs)
        job.done_items += part.end - part.start
        if job.done_items == len(job.items):
            job.future.set_result(job.outputs)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        if not job.started and not self._begin(job):
            return  # cancelled: nobody is waiting
        if job.future.done():
            return
        job.future.set_exception(exc)
        with self._cond:  # the rest of a cut job must not run
            if job in self._queue:
                self._queue.remove(job)
                self._queued_pairs -= job.waiting_items
                job.next_item = len(job.items)


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
