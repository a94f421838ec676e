"""Packing never changes a score: packed == unpacked == shared-prefix, neighbours don't matter."""

from __future__ import annotations

import pytest

from finerank.engine.packing import plan_packs
from finerank.models.base import EncodedPair
from tests.engine.conftest import INSTRUCTION, QUERY, engine_like, sentences

TOL = 1e-5


def _logits(engine, query, docs, instruction=None):
    prepared = engine.prepare(query, docs, instruction=instruction)
    return engine.run(prepared.items)


def test_packed_unpacked_and_shared_prefix_agree(qwen3_reranker, mixed_docs):
    one_by_one = engine_like(qwen3_reranker, max_batch_tokens=1, share_prefix=False)
    packed = engine_like(qwen3_reranker, share_prefix=False)
    shared = engine_like(qwen3_reranker, share_prefix=True)
    small_packs = engine_like(qwen3_reranker, max_batch_tokens=300, share_prefix=True)

    items = shared.prepare(QUERY, mixed_docs, instruction=INSTRUCTION).items
    # the settings really produce different pass layouts
    assert len(one_by_one.plan(items)) == len(items)
    assert len(packed.plan(items)) == 1
    assert all(not g.prefix for g in packed.plan(items)[0].groups)
    shared_plan = shared.plan(items)
    assert len(shared_plan) == 1 and len(shared_plan[0].groups[0].prefix) > 50
    assert len(small_packs.plan(items)) > 2

    expected = _logits(one_by_one, QUERY, mixed_docs, INSTRUCTION)
    assert max(expected) - min(expected) > 0.5  # spread-out logits: the comparison bites
    for engine in (packed, shared, small_packs):
        got = _logits(engine, QUERY, mixed_docs, INSTRUCTION)
        assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) <= TOL


def test_many_queries_in_one_run_equal_separate_runs(qwen3_reranker, mixed_docs):
    engine = qwen3_reranker.engine
    requests = [
        (QUERY, mixed_docs[:6], INSTRUCTION),
        ("another query", mixed_docs[3:], None),
        ("", mixed_docs[::2], "x"),
    ]
    prepared = [engine.prepare(q, d, instruction=i) for q, d, i in requests]
    merged = engine.run([item for p in prepared for item in p.items])
    offset = 0
    for p in prepared:
        alone = engine.run(p.items)
        together = merged[offset : offset + len(p.items)]
        offset += len(p.items)
        assert max(abs(a - b) for a, b in zip(alone, together, strict=True)) <= TOL


@pytest.mark.parametrize(
    "neighbours", [[], ["x"], [sentences(60)], [sentences(i) for i in range(8)]]
)
def test_score_does_not_depend_on_batch_neighbours(qwen3_reranker, neighbours):
    target = sentences(5, 3)
    alone = qwen3_reranker.rerank(QUERY, [target])[0].logit
    docs = neighbours[: len(neighbours) // 2] + [target] + neighbours[len(neighbours) // 2 :]
    results = qwen3_reranker.rerank(QUERY, docs)
    position = len(neighbours) // 2
    got = next(r.logit for r in results if r.index == position)
    assert abs(got - alone) <= TOL


def test_plan_respects_budget_and_keeps_every_item():
    items = [EncodedPair(tuple([1] * 20 + [i] * (5 + i % 17)), "k") for i in range(40)]
    items += [EncodedPair(tuple(range(300)), None)]  # longer than the budget: its own pack
    packs = plan_packs(items, 120)
    seen = sorted(i for pack in packs for i in pack.item_indices)
    assert seen == list(range(len(items)))
    for pack in packs:
        if len(pack.item_indices) > 1:
            assert pack.num_tokens <= 120
        for group in pack.groups:
            for index, tail in group.members:
                assert list(group.prefix) + tail == list(items[index].ids)
