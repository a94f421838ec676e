"""BatchScheduler: cross-request merging, token budget, bounded queue, cancellation, errors."""

from __future__ import annotations

import time

import pytest

from finerank.engine.scheduler import BatchScheduler, prefix_shared_token_count
from finerank.errors import QueueFullError, ServiceUnavailableError
from finerank.models import allocator
from tests.server.conftest import GatedEngine

QUERIES = ["capital of France", "how do rivers form", "tax law for companies", "python typing"]
DOCS = ["Paris is the capital.", "Rivers form from rain.", "Companies pay tax.", "Types help."]


def _prepared(reranker, query):
    return reranker.engine.prepare(query, DOCS)


@pytest.fixture
def held(qwen3_reranker):
    engine = GatedEngine(qwen3_reranker.engine)
    scheduler = BatchScheduler(engine, batch_wait_ms=0)
    scheduler.start()
    yield scheduler, engine
    engine.gate.set()
    scheduler.stop()


def _hold_worker(scheduler, engine, qwen3_reranker):
    """Occupy the worker with one job and wait until it is inside engine.run."""
    engine.gate.clear()
    first = scheduler.submit(_prepared(qwen3_reranker, "warm up").items)
    assert engine.entered.wait(10)
    return first


def test_concurrent_jobs_share_one_batch_and_get_their_own_logits(held, qwen3_reranker):
    scheduler, engine = held
    first = _hold_worker(scheduler, engine, qwen3_reranker)
    prepared = [_prepared(qwen3_reranker, q) for q in QUERIES]
    futures = [scheduler.submit(p.items) for p in prepared]
    assert scheduler.queued_pairs == len(QUERIES) * len(DOCS)
    engine.gate.set()
    first.result(10)
    for query, p, future in zip(QUERIES, prepared, futures, strict=True):
        got = p.collect(future.result(10))
        want = qwen3_reranker.engine.score_request(query, DOCS)
        assert [r.logit for r in got] == pytest.approx([r.logit for r in want], abs=1e-5)
    # The four queued jobs ran as one merged batch after the first.
    assert engine.run_sizes[1] == len(QUERIES) * len(DOCS)


def test_batches_respect_the_token_budget(qwen3_reranker):
    engine = GatedEngine(qwen3_reranker.engine)
    prepared = [_prepared(qwen3_reranker, q) for q in QUERIES]
    # room for exactly one job, its query prefix counted once as the engine packs it
    budget = max(sum(prefix_shared_token_count(p.items)) for p in prepared) + 1
    scheduler = BatchScheduler(engine, max_batch_tokens=budget, batch_wait_ms=0)
    scheduler.start()
    try:
        first = _hold_worker(scheduler, engine, qwen3_reranker)
        futures = [scheduler.submit(p.items) for p in prepared]
        engine.gate.set()
        first.result(10)
        for future in futures:
            future.result(10)
        assert engine.run_sizes[1:] == [len(DOCS)] * len(QUERIES)
    finally:
        scheduler.stop()


def test_a_cancelled_job_never_runs(held, qwen3_reranker):
    scheduler, engine = held
    first = _hold_worker(scheduler, engine, qwen3_reranker)
    doomed = scheduler.submit(_prepared(qwen3_reranker, QUERIES[0]).items)
    kept = scheduler.submit(_prepared(qwen3_reranker, QUERIES[1]).items)
    assert doomed.cancel()
    engine.gate.set()
    first.result(10)
    assert len(kept.result(10)) == len(DOCS)
    assert scheduler.dropped_pairs == len(DOCS) and scheduler.dropped_jobs == 1
    assert sum(engine.run_sizes) == 2 * len(DOCS)  # warm-up + kept, never the cancelled one


def test_full_queue_refuses_but_an_empty_queue_admits_an_oversized_job(qwen3_reranker):
    engine = GatedEngine(qwen3_reranker.engine)
    scheduler = BatchScheduler(engine, max_queue_pairs=len(DOCS), batch_wait_ms=0)
    scheduler.start()
    try:
        first = _hold_worker(scheduler, engine, qwen3_reranker)
        big = qwen3_reranker.engine.prepare("q", DOCS * 3)  # over the bound, queue empty
        admitted = scheduler.submit(big.items)
        with pytest.raises(QueueFullError, match="max_queue_pairs=4") as info:
            scheduler.submit(_prepared(qwen3_reranker, "q").items)
        assert info.value.retry_after_s > 0
        engine.gate.set()
        first.result(10)
        assert len(admitted.result(10)) == len(DOCS) * 3
    finally:
        scheduler.stop()


def test_engine_failure_reaches_every_caller_and_the_worker_survives(qwen3_reranker):
    class Failing(GatedEngine):
        fail = True

        def run(self, items):
            if self.fail:
                self.fail = False
                raise RuntimeError("device lost")
            return super().run(items)

    engine = Failing(qwen3_reranker.engine)
    scheduler = BatchScheduler(engine, batch_wait_ms=0)
    scheduler.start()
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            scheduler.submit(_prepared(qwen3_reranker, "q").items).result(10)
        assert len(scheduler.submit(_prepared(qwen3_reranker, "q").items).result(10)) == 4
    finally:
        scheduler.stop()


def test_stop_drains_or_fails_queued_work(qwen3_reranker):
    for drain in (True, False):
        engine = GatedEngine(qwen3_reranker.engine)
        scheduler = BatchScheduler(engine, batch_wait_ms=0)
        scheduler.start()
        first = _hold_worker(scheduler, engine, qwen3_reranker)
        queued = scheduler.submit(_prepared(qwen3_reranker, "q").items)
        if drain:
            engine.gate.set()
        scheduler.stop(drain=drain, timeout=None if drain else 0.5)
        engine.gate.set()
        first.result(10)
        if drain:
            assert len(queued.result(10)) == len(DOCS)
        else:
            with pytest.raises(ServiceUnavailableError):
                queued.result(10)
        with pytest.raises(ServiceUnavailableError):
            scheduler.submit(_prepared(qwen3_reranker, "q").items)


def test_waits_to_fill_a_batch_only_under_load(qwen3_reranker):
    scheduler = BatchScheduler(qwen3_reranker.engine, batch_wait_ms=10_000)
    scheduler.start()
    try:
        items = _prepared(qwen3_reranker, "q").items
        scheduler.submit(items).result(10)  # warm
        started = time.perf_counter()
        scheduler.submit(items).result(10)
        # A lone request on an idle worker does not pay the 10 s wait.
        assert time.perf_counter() - started < 5
    finally:
        scheduler.stop()


def test_a_big_job_is_cut_so_a_small_one_waits_one_run_at_most(qwen3_reranker):
    engine = GatedEngine(qwen3_reranker.engine)
    big = qwen3_reranker.engine.prepare("q", [f"document number {i} " * 8 for i in range(40)])
    small = _prepared(qwen3_reranker, "small")
    budget = 4 * max(len(item.ids) for item in big.items)  # the big job needs about 10 runs
    scheduler = BatchScheduler(engine, max_batch_tokens=budget, batch_wait_ms=0)
    scheduler.start()
    finished: list[str] = []
    try:
        first = _hold_worker(scheduler, engine, qwen3_reranker)
        big_future = scheduler.submit(big.items)
        big_future.add_done_callback(lambda _: finished.append("big"))
        engine.gate.set()
        first.result(10)
        while len(engine.run_sizes) < 2:  # the big job's first cut is running
            time.sleep(0.001)
        small_future = scheduler.submit(small.items)
        small_future.add_done_callback(lambda _: finished.append("small"))
        want = qwen3_reranker.engine.run(big.items)
        assert big_future.result(30) == pytest.approx(want, abs=1e-5)
        assert len(small_future.result(30)) == len(DOCS)
        assert finished == ["small", "big"]
        # the big job ran in cuts; the small one shared the run after the first cut
        assert sum(engine.run_sizes[1:]) == len(big.items) + len(DOCS)
        assert len(engine.run_sizes) - 1 >= 5
        # each future knows when its job was queued and when its first and last batch ran
        runs = len(engine.run_sizes) - 1
        held, cut, alone = first.times, big_future.times, small_future.times
        assert (held.batches, cut.batches, alone.batches) == (1, runs, 1)
        assert held.submitted <= held.first_batch_start < held.last_batch_end
        # the big job queued behind the held run; its forward span holds every cut (and the
        # run it shared with the small job)
        assert cut.first_batch_start >= held.last_batch_end
        assert cut.queue_seconds >= held.last_batch_end - cut.submitted
        assert cut.first_batch_start < alone.submitted < alone.first_batch_start
        assert alone.last_batch_end <= cut.last_batch_end
        assert cut.forward_seconds > alone.forward_seconds > 0
    finally:
        scheduler.stop()


def test_withdraw_drops_what_is_left_of_a_started_job(qwen3_reranker):
    engine = GatedEngine(qwen3_reranker.engine)
    big = qwen3_reranker.engine.prepare("q", [f"document number {i} " * 8 for i in range(40)])
    budget = 4 * max(len(item.ids) for item in big.items)
    scheduler = BatchScheduler(engine, max_batch_tokens=budget, batch_wait_ms=0)
    scheduler.start()
    try:
        engine.gate.clear()
        future = scheduler.submit(big.items)
        assert engine.entered.wait(10)  # its first cut is in the model
        assert not future.cancel()  # started: cancel alone cannot stop it
        scheduler.withdraw(future)
        engine.gate.set()
        with pytest.raises(ServiceUnavailableError, match="withdrawn"):
            future.result(10)
        assert len(engine.run_sizes) == 1  # nothing after the cut that was running
        assert scheduler.dropped_pairs == len(big.items) - engine.run_sizes[0]
        assert scheduler.queued_pairs == 0
    finally:
        scheduler.stop()


def test_a_failing_request_in_a_merged_run_fails_alone(small_vocab_reranker):
    # "the", "of", "and", "in" and "a" have ids below 2000 in the uncased BERT vocabulary
    good = ["the of and in", "a the a"]
    engine = GatedEngine(small_vocab_reranker.engine)
    scheduler = BatchScheduler(engine, batch_wait_ms=0)
    scheduler.start()
    try:
        engine.gate.clear()
        first = scheduler.submit(engine.prepare("the", good).items)
        assert engine.entered.wait(10)
        jobs = [
            engine.prepare("the", good),
            engine.prepare("the", ["zebra crossing"]),  # ids above 2000: IndexError
            engine.prepare("of", good),
        ]
        futures = [scheduler.submit(job.items) for job in jobs]
        engine.gate.set()
        first.result(10)
        for index in (0, 2):
            want = small_vocab_reranker.engine.run(jobs[index].items)
            assert futures[index].result(10) == pytest.approx(want, abs=1e-6)
        with pytest.raises(IndexError):
            futures[1].result(10)
        # the merged run failed, then each job ran alone
        assert engine.run_sizes[1:] == [5, 2, 1, 2]
    finally:
        scheduler.stop()


def test_out_of_memory_halves_the_run_and_loses_nothing(qwen3_reranker):
    import torch

    class SmallMemory(GatedEngine):
        def run(self, items):
            self.run_sizes.append(len(items))
            if len(items) > 3:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated at the model)")
            return self._engine.run(items)

    engine = SmallMemory(qwen3_reranker.engine)
    scheduler = BatchScheduler(engine, batch_wait_ms=0)
    scheduler.start()
    try:
        prepared = qwen3_reranker.engine.prepare("q", DOCS * 3)  # 12 items
        got = scheduler.submit(prepared.items).result(10)
        assert got == pytest.approx(qwen3_reranker.engine.run(prepared.items), abs=1e-5)
        assert engine.run_sizes == [12, 6, 3, 3, 6, 3, 3]
    finally:
        scheduler.stop()


def test_an_idle_worker_gives_memory_back_once_per_idle_spell(qwen3_reranker, monkeypatch):
    released: list[float] = []
    monkeypatch.setattr(allocator, "IDLE_RELEASE_S", 0.05)
    monkeypatch.setattr(allocator, "release_when_idle", lambda: released.append(1.0) or True)
    scheduler = BatchScheduler(qwen3_reranker.engine, batch_wait_ms=0)
    scheduler.start()

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(released) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    try:
        time.sleep(0.3)
        assert released == []  # nothing ran yet: nothing to give back
        scheduler.submit(_prepared(qwen3_reranker, QUERIES[0]).items).result(10)
        wait_for(1)
        time.sleep(0.3)
        assert len(released) == 1  # once, not every IDLE_RELEASE_S
        scheduler.submit(_prepared(qwen3_reranker, QUERIES[1]).items).result(10)
        wait_for(2)
        assert len(released) == 2
    finally:
        scheduler.stop()
