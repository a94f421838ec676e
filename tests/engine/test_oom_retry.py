"""On out-of-memory the engine halves the pack and retries; no pair is ever dropped."""

from __future__ import annotations

import pytest
import torch

from tests.engine.conftest import INSTRUCTION, QUERY, engine_like


class OomAbove:
    """The real backend, except that packs above ``limit`` tokens raise OutOfMemoryError."""

    def __init__(self, backend, limit: int):
        self._backend = backend
        self.limit = limit
        self.attempts: list[int] = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def forward(self, pack):
        self.attempts.append(pack.num_tokens)
        if pack.num_tokens > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {pack.num_tokens} tokens")
        return self._backend.forward(pack)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_oom_halves_and_keeps_every_pair(qwen3_reranker, mixed_docs, share_prefix):
    normal = engine_like(qwen3_reranker, share_prefix=share_prefix)
    items = normal.prepare(QUERY, mixed_docs, instruction=INSTRUCTION).items
    expected = normal.run(items)
    limit = max(len(item.ids) for item in items)  # every pair fits alone, the batch does not
    assert sum(len(item.ids) for item in items) > 2 * limit

    flaky = OomAbove(qwen3_reranker.backend, limit=limit)
    engine = engine_like(qwen3_reranker, share_prefix=share_prefix)
    engine.backend = flaky
    got = engine.run(items)
    assert len(got) == len(expected)
    assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) <= 1e-5
    assert flaky.attempts[0] > limit  # an OOM really happened
    assert len(flaky.attempts) > 2  # ... and was retried in halves


def test_single_pair_too_big_still_raises(qwen3_reranker, mixed_docs):
    engine = engine_like(qwen3_reranker)
    engine.backend = OomAbove(qwen3_reranker.backend, limit=10)
    with pytest.raises(torch.OutOfMemoryError):
        engine.run(engine.prepare(QUERY, mixed_docs[:2]).items)
