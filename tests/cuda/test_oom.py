"""A real CUDA out-of-memory error (the caching allocator's, under a per-process memory cap)
halves the pack and retries; every pair is scored, with the scores of an unconstrained run."""

from __future__ import annotations

import pytest
import torch

from finerank.engine.engine import ScoringEngine
from tests.cuda.conftest import MARKS
from tests.engine.conftest import INSTRUCTION, QUERY, sentences

pytestmark = MARKS


class CountingBackend:
    """The real backend, recording the token count of every pack it is asked to run."""

    def __init__(self, backend):
        self._backend = backend
        self.attempts: list[int] = []
        self.failures: list[int] = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def forward(self, pack):
        self.attempts.append(pack.num_tokens)
        try:
            return self._backend.forward(pack)
        except torch.OutOfMemoryError:
            self.failures.append(pack.num_tokens)
            raise


def _peak_bytes(call) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_real_oom_halves_and_keeps_every_pair(cuda_rerankers, dtype):
    reranker = cuda_rerankers[dtype]
    engine = ScoringEngine(
        reranker.backend, max_batch_tokens=1 << 23, share_prefix=True, chunk_overlap=0.125
    )
    docs = [sentences(60, i) for i in range(96)]  # ~96 x 1,100 tokens, one huge pack
    few = engine.prepare(QUERY, docs[:4], instruction=INSTRUCTION).items
    engine.run(few)  # first use: the varlen kernel's check runs both paths
    small = _peak_bytes(lambda: engine.run(few))
    headroom = max(4 * small, 32 << 20)
    # The cap below must let only small packs through: more documents until the whole pack
    # needs over 3x the headroom. fp32 runs SDPA groups, and with GQA that is the math
    # backend (the efficient one takes no GQA), whose per-segment score matrices make a
    # small pack cost far more than its tokens; bf16's varlen kernel has none.
    while True:
        items = engine.prepare(QUERY, docs, instruction=INSTRUCTION).items
        expected = engine.run(items)
        whole = _peak_bytes(lambda batch=items: engine.run(batch))
        if whole > 3 * headroom or len(docs) >= 1536:
            break
        docs += [sentences(60, i) for i in range(len(docs), 2 * len(docs))]
    assert len(engine.plan(items)) == 1
    assert whole > 3 * headroom, (whole, small, len(docs))

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    cap = torch.cuda.memory_reserved() + headroom
    counting = CountingBackend(reranker.backend)
    engine.backend = counting
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    try:
        got = engine.run(items)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert counting.failures, "no OOM happened under the cap"
    assert counting.failures[0] == counting.attempts[0]  # the whole pack failed first
    assert len(counting.attempts) > 2  # ... and was retried in halves
    assert len(got) == len(expected)
    tolerance = 1e-5 if dtype == "float32" else 2e-2  # other pack shapes, other roundings
    assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) <= tolerance
