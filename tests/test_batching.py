"""The batching path both services share: the prepare lane's order and shutdown, big requests
in steps (stopped early by the limit, the rest never run), cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from finerank.batching import INLINE_PREPARE_CHARS, BatchedService, PrepareLane
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
