"""RerankService: same answers as the Python API, limits, lifecycle, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from finerank.errors import (
    InvalidInputError,
    LimitExceededError,
    ServiceUnavailableError,
    UnknownModelError,
)
from finerank.service import RerankService
from tests.server.conftest import tiny_settings

QUERY = "Which city is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "France borders Spain."]


def _pairs(results):
    return [(r.index, round(r.score, 6)) for r in results]


@pytest.fixture
def service(qwen3_reranker, qwen3_reranker_dir):
    svc = RerankService(tiny_settings(qwen3_reranker_dir), reranker=qwen3_reranker)
    svc.start()
    yield svc
    svc.stop()


async def test_rerank_equals_the_python_api(service, qwen3_reranker):
    for kwargs in ({}, {"top_n": 2}, {"instruction": "Find the capital"}):
        outcome = await service.rerank(QUERY, DOCS, **kwargs)
        assert _pairs(outcome.results) == _pairs(qwen3_reranker.rerank(QUERY, DOCS, **kwargs))
    outcome = await service.rerank(QUERY, DOCS)
    assert outcome.prompt_tokens == qwen3_reranker.count_tokens(QUERY, DOCS)
    assert outcome.num_documents == 3


async def test_chunk_mode_returns_the_winning_span(service, qwen3_reranker):
    long_doc = " ".join(f"sentence {i} about rivers and mountains." for i in range(300))
    kwargs = dict(long_document="chunk", max_tokens_per_doc=128)
    outcome = await service.rerank(QUERY, [long_doc, DOCS[0]], **kwargs)
    want = qwen3_reranker.rerank(QUERY, [long_doc, DOCS[0]], **kwargs)
    assert [(r.index, r.span) for r in outcome.results] == [(r.index, r.span) for r in want]
    assert any(r.span is not None and r.span != (0, len(long_doc)) for r in outcome.results)


async def test_score_pairs_like_vllm(service, qwen3_reranker):
    single = await service.score(QUERY, DOCS)
    assert [r.score for r in single.results] == pytest.approx(
        qwen3_reranker.score([(QUERY, d) for d in DOCS]), abs=1e-6
    )
    queries = [QUERY, "yellow fruit", QUERY]
    paired = await service.score(queries, DOCS)
    assert [r.index for r in paired.results] == [0, 1, 2]
    assert [r.score for r in paired.results] == pytest.approx(
        qwen3_reranker.score(list(zip(queries, DOCS, strict=True))), abs=1e-6
    )
    with pytest.raises(InvalidInputError, match="text_1 has 2 items and text_2 has 3"):
        await service.score(queries[:2], DOCS)


async def test_limits_name_the_limit_and_the_value(qwen3_reranker, qwen3_reranker_dir):
    settings = tiny_settings(
        qwen3_reranker_dir, max_documents_per_request=2, max_tokens_per_request=100
    )
    svc = RerankService(settings, reranker=qwen3_reranker)
    svc.start()
    try:
        with pytest.raises(LimitExceededError, match="max_documents_per_request=2") as info:
            await svc.rerank(QUERY, DOCS)
        assert (info.value.limit, info.value.value) == (2, 3)
        with pytest.raises(LimitExceededError, match="max_tokens_per_request=100") as info:
            await svc.rerank(QUERY, DOCS[:2])
        assert info.value.limit_name == "max_tokens_per_request" and info.value.value > 100
    finally:
        svc.stop()


async def test_bad_input_is_a_domain_error(service):
    with pytest.raises(InvalidInputError, match=r"documents\[1\] must be a string"):
        await service.rerank(QUERY, ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="top_n"):
        await service.rerank(QUERY, DOCS, top_n=0)
    with pytest.raises(UnknownModelError, match="'tiny'"):
        service.check_model("gpt-4")
    service.check_model("tiny")
    service.check_model(None)


async def test_not_started_or_stopped_is_unavailable(qwen3_reranker, qwen3_reranker_dir):
    svc = RerankService(tiny_settings(qwen3_reranker_dir), reranker=qwen3_reranker)
    assert not svc.ready
    with pytest.raises(ServiceUnavailableError):
        await svc.rerank(QUERY, DOCS)
    svc.start()
    assert svc.ready
    svc.stop()
    assert not svc.ready
    with pytest.raises(ServiceUnavailableError):
        await svc.rerank(QUERY, DOCS)


async def test_cancelled_call_drops_its_queued_pairs(gated, qwen3_reranker_dir):
    reranker, engine = gated
    svc = RerankService(tiny_settings(qwen3_reranker_dir), reranker=reranker)
    svc.start()
    try:
        engine.gate.clear()
        blocker = asyncio.create_task(svc.rerank("first", DOCS))
        while not engine.entered.is_set():
            await asyncio.sleep(0.01)
        doomed = asyncio.create_task(svc.rerank(QUERY, DOCS))
        while svc.queued_pairs < len(DOCS):
            await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.sleep(0.05)
        engine.gate.set()
        assert len((await blocker).results) == 3
        follow_up = await svc.rerank(QUERY, DOCS)
        assert len(follow_up.results) == 3
        assert svc.scheduler.dropped_pairs == len(DOCS)
        assert engine.run_sizes == [len(DOCS), len(DOCS)]  # the cancelled call never ran
    finally:
        engine.gate.set()
        svc.stop()


def test_needs_a_model():
    from finerank.settings import Settings

    with pytest.raises(InvalidInputError, match="no model"):
        RerankService(Settings())
