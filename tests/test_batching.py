"""The batching path both services share: the prepare lane's order and shutdown, big requests
in steps (stopped early by the limit, the rest never run), cancellation, per-request timings."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from finerank.batching import (
    INLINE_PREPARE_CHARS,
    BatchedService,
    PrepareLane,
    RequestClock,
    RequestTimings,
)
from finerank.errors import LimitExceededError, ServiceUnavailableError
from finerank.settings import Settings


class Doubler:
    """A batch model: each prepared item is an int, a run doubles them (``gate`` holds it)."""

    max_batch_tokens = 64

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.runs: list[list[int]] = []

    def run(self, items):
        self.gate.wait(30)
        self.runs.append(list(items))
        return [2 * x for x in items]


class DoubleService(BatchedService[Doubler]):
    def _batch_model(self, model: Doubler) -> Doubler:
        return model

    def _batch_costs(self):
        return lambda items: [1] * len(items)

    async def double(self, numbers: list[int], *, size: int = 1, step_s: float = 0.0):
        """A request method as the services write them: ``step_s`` of "tokenizing" per step
        (one step per number when ``size`` is over the inline bound), a token limit."""
        clock = RequestClock()

        def whole() -> list[int]:
            time.sleep(step_s)
            return list(numbers)

        def steps():
            for count in range(1, len(numbers) + 1):
                time.sleep(step_s)
                yield count
            return list(numbers)

        items = await self._prepare(size, whole, steps, clock=clock)
        self._check_tokens(len(items))
        doubled = await self._submit(items, clock=clock)
        return doubled, self._finish(clock)


@pytest.fixture
def service():
    svc = DoubleService(Settings(max_tokens_per_request=5), model=Doubler())
    svc.start()
    yield svc
    assert svc.model is not None
    svc.model.gate.set()
    svc.stop()


def test_urgent_jobs_run_before_queued_steps():
    lane = PrepareLane(threading.Lock())
    release = threading.Event()
    order: list[str] = []
    try:
        blocker = lane.submit(lambda: release.wait(30))
        while not blocker.running():
            threading.Event().wait(0.001)
        later = [lane.submit(lambda n=n: order.append(n)) for n in ("step 1", "step 2")]
        urgent = lane.submit(lambda: order.append("small"), urgent=True)
        release.set()
        for future in (*later, urgent):
            future.result(30)
    finally:
        lane.shutdown()
    assert order == ["small", "step 1", "step 2"]
    with pytest.raises(ServiceUnavailableError, match="shutting down"):
        lane.submit(lambda: None)


async def test_steps_stop_at_the_limit_and_the_rest_never_runs(service):
    taken: list[int] = []
    closed = threading.Event()

    def steps():
        try:
            for tokens in range(1, 100):
                taken.append(tokens)
                yield tokens
            return "never"
        finally:
            closed.set()

    with pytest.raises(LimitExceededError, match="more than 5 tokens"):
        await service._prepare(
            INLINE_PREPARE_CHARS + 1,
            lambda: "whole",
            steps,
            check_step=lambda tokens: service._check_tokens(tokens, at_least=True),
        )
    assert taken == [1, 2, 3, 4, 5, 6]
    assert closed.wait(5) and service.preparing == 0


async def test_small_requests_are_prepared_whole_big_ones_in_steps(service):
    def steps():
        yield 1
        yield 2
        return "in steps"

    small = await service._prepare(INLINE_PREPARE_CHARS, lambda: "whole", steps)
    big = await service._prepare(INLINE_PREPARE_CHARS + 1, lambda: "whole", steps)
    assert (small, big) == ("whole", "in steps")


async def test_a_cancelled_caller_withdraws_its_items(service):
    model = service.model
    model.gate.clear()
    first = asyncio.ensure_future(service._submit([1, 2]))
    while not service.scheduler._running:
        await asyncio.sleep(0.001)
    doomed = asyncio.ensure_future(service._submit([3, 4, 5]))
    while service.queued_pairs < 3:
        await asyncio.sleep(0.001)
    doomed.cancel()
    await asyncio.sleep(0.01)
    model.gate.set()
    assert await first == [2, 4]
    assert await service._submit([6]) == [12]
    assert model.runs == [[1, 2], [6]]  # the cancelled request never ran


def test_not_started_and_stopped_are_unavailable():
    svc = DoubleService(model=Doubler())
    assert not svc.ready
    with pytest.raises(ServiceUnavailableError, match="not loaded yet"):
        asyncio.run(svc._submit([1]))
    with pytest.raises(ServiceUnavailableError, match="no model loaded"):
        DoubleService().start()
    svc.start()
    svc.start()  # idempotent
    assert svc.ready and asyncio.run(svc._submit([1])) == [2]
    svc.stop()
    svc.stop()
    assert not svc.ready
    with pytest.raises(ServiceUnavailableError):
        asyncio.run(svc._prepare(1, lambda: "whole", lambda: iter(())))


def _consistent(timings: RequestTimings) -> None:
    phases = (timings.tokenize_s, timings.queue_s, timings.forward_s)
    assert min(phases) >= 0 and sum(phases) <= timings.total_s


async def test_each_answered_request_is_timed_in_phases_once(service):
    seen: list[RequestTimings] = []
    service.add_request_listener(seen.append)
    _, small = await service.double([1, 2], step_s=0.01)
    _, big = await service.double([1, 2, 3], size=INLINE_PREPARE_CHARS + 1, step_s=0.01)
    with pytest.raises(LimitExceededError):  # a failed request is not timed
        await service.double([1, 2, 3, 4, 5, 6])
    assert seen == [small, big]
    for timings in seen:
        _consistent(timings)
        assert timings.batches == 1
    assert small.tokenize_s >= 0.01
    assert big.tokenize_s >= 0.03  # summed over its three steps on the lane


async def test_queue_and_forward_time_come_from_the_scheduler(service):
    model = service.model
    model.gate.clear()
    first = asyncio.ensure_future(service.double([1]))
    while not service.scheduler._running:
        await asyncio.sleep(0.001)
    second = asyncio.ensure_future(service.double([2]))
    while service.queued_pairs < 1:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    model.gate.set()
    (_, held), (_, queued) = await first, await second
    assert held.forward_s >= 0.05  # the held run
    assert queued.queue_s >= 0.05  # waited behind it
    _consistent(held)
    _consistent(queued)


async def test_a_request_cut_over_batches_is_timed_from_its_first_batch_to_its_last():
    svc = DoubleService(Settings(max_batch_tokens=256), model=Doubler())
    runs: list[float] = []
    svc.add_batch_listener(lambda stats: runs.append(stats.seconds))
    svc.start()
    try:
        doubled, timings = await svc.double(list(range(600)))  # 600 items of 1 token each
    finally:
        svc.stop()
    assert doubled == [2 * x for x in range(600)]
    assert timings.batches == len(runs) == 3
    assert timings.forward_s >= sum(runs)  # the span holds every batch
    _consistent(timings)


def test_a_broken_request_listener_does_not_fail_the_request(service):
    def broken(timings):
        raise RuntimeError("listener bug")

    service.add_request_listener(broken)
    doubled, timings = asyncio.run(service.double([4]))
    assert doubled == [8] and timings.total_s > 0
