"""One big request must not stall the others (issue 11.4): small requests are answered before a
huge one still being tokenized, and a huge ``chunk`` request over the token limit is refused
after reading about as much as the limit allows, not all of it."""

from __future__ import annotations

import asyncio
import json

import pytest

from finerank.errors import LimitExceededError
from finerank.service import INLINE_PREPARE_CHARS, RerankService
from tests.server.conftest import asgi_client, tiny_settings

QUERY = "非法获取计算机信息系统数据，应承担什么法律责任？"


@pytest.fixture(scope="module")
def law_text(shared_data) -> str:
    lines = (shared_data / "laws" / "articles.jsonl").read_text(encoding="utf-8").splitlines()
    return "\n".join(json.loads(line)["text"] for line in lines if line.strip())


def huge_document(law_text: str, chars: int) -> str:
    return (law_text * (chars // len(law_text) + 1))[:chars]


class StepCounter:
    """The real engine; counts the steps its ``prepare_steps`` generators take."""

    def __init__(self, engine):
        self._engine = engine
        self.steps = 0
        self.read: list[int] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def prepare_steps(self, *args, **kwargs):
        steps = self._engine.prepare_steps(*args, **kwargs)
        try:
            while True:
                tokens = next(steps)
                self.steps += 1
                self.read.append(tokens)
                yield tokens
        except StopIteration as done:
            return done.value
        finally:
            steps.close()


def _service(qwen3_reranker, model_dir, **overrides):
    from finerank import Reranker

    counter = StepCounter(qwen3_reranker.engine)
    reranker = Reranker(counter, name="tiny", path=qwen3_reranker.path, load_seconds=0.0)
    service = RerankService(tiny_settings(model_dir, **overrides), reranker=reranker)
    service.start()
    return service, counter


async def test_small_requests_are_answered_before_a_huge_one(
    qwen3_reranker, qwen3_reranker_dir, law_text
):
    # 600K characters (~310K tokens): tens of tokenizing steps; refused (413) near the end.
    huge = huge_document(law_text, 600_000)
    service, counter = _service(qwen3_reranker, qwen3_reranker_dir, max_tokens_per_request=300_000)
    app_order: list[str] = []
    try:

        async def run(name, documents, **kwargs):
            try:
                await service.rerank(QUERY, documents, **kwargs)
                app_order.append(f"{name}: ok")
            except LimitExceededError:
                app_order.append(f"{name}: 413")

        big = asyncio.create_task(run("huge", [huge], long_document="chunk"))
        while counter.steps < 2:  # the huge one is being tokenized
            await asyncio.sleep(0.01)
        # one small enough to tokenize inline, one just over the inline size
        await asyncio.gather(
            run("small", ["第二十七条 任何个人和组织不得从事非法侵入他人网络的活动。"]),
            run("medium", [law_text[: INLINE_PREPARE_CHARS + 100]], long_document="chunk"),
        )
        assert service.preparing == 1 and not big.done()
        await big
    finally:
        service.stop()
    assert app_order[-1] == "huge: 413", app_order
    assert sorted(app_order[:2]) == ["medium: ok", "small: ok"]


async def test_a_huge_chunk_request_is_refused_after_reading_about_the_limit(
    qwen3_reranker, qwen3_reranker_dir, law_text
):
    huge = huge_document(law_text, 2_000_000)  # ~1M tokens
    limit = 50_000
    service, counter = _service(qwen3_reranker, qwen3_reranker_dir, max_tokens_per_request=limit)
    try:
        with pytest.raises(LimitExceededError) as refused:
            await service.rerank(QUERY, [huge], long_document="chunk")
    finally:
        service.stop()
    assert refused.value.limit_name == "max_tokens_per_request"
    assert "more than 50000 tokens" in str(refused.value)
    # it stopped at the first step past the limit: a few steps of ~32K characters, not 2M
    assert counter.read[-1] > limit and counter.read[-2] <= limit
    assert counter.steps <= 6 and counter.read[-1] < 100_000


async def test_over_the_limit_in_truncate_mode_stops_early_too(
    qwen3_reranker, qwen3_reranker_dir, law_text
):
    documents = [law_text[i : i + 3000] for i in range(0, 30 * 3000, 3000)] * 20  # 600 docs
    service, counter = _service(qwen3_reranker, qwen3_reranker_dir, max_tokens_per_request=50_000)
    try:
        with pytest.raises(LimitExceededError):
            await service.rerank(QUERY, documents)
    finally:
        service.stop()
    assert counter.read[-1] > 50_000 and counter.read[-1] < 150_000


async def test_a_request_at_exactly_the_limit_passes(qwen3_reranker, qwen3_reranker_dir, law_text):
    """No false 413 from counting in steps: the running counts never exceed the exact one."""
    documents = [law_text[:3000]] * 10
    exact = qwen3_reranker.engine.prepare(QUERY, documents).num_tokens
    service, _ = _service(qwen3_reranker, qwen3_reranker_dir, max_tokens_per_request=exact)
    try:
        outcome = await service.rerank(QUERY, documents)
    finally:
        service.stop()
    assert outcome.prompt_tokens == exact


async def test_http_small_answer_comes_before_a_huge_chunk_request(make_app, law_text):
    """Through the real app: a huge chunk-mode document and a tiny request sent while it is
    being tokenized; the tiny one is answered first, the huge one gets a 413."""
    huge = huge_document(law_text, 1_200_000)
    app = make_app(max_tokens_per_request=300_000)
    order: list[tuple[str, int]] = []
    async with asgi_client(app) as c:
        service = app.state.runtime.rerank

        async def post(name, body):
            answer = await c.post("/v1/rerank", json=body, timeout=600)
            order.append((name, answer.status_code))
            return answer

        big = asyncio.create_task(
            post("huge", {"query": QUERY, "documents": [huge], "long_document": "chunk"})
        )
        while service.preparing == 0 and not big.done():
            await asyncio.sleep(0.01)
        small = await post("small", {"query": QUERY, "documents": ["a", "b"]})
        assert small.status_code == 200 and not big.done()
        refused = await big
    assert order == [("small", 200), ("huge", 413)]
    body = refused.json()
    assert body["error"]["limit"] == "max_tokens_per_request"
    assert body["detail"].startswith("request too long: more than 300000 tokens")


def test_the_size_bound_never_undercounts(qwen3_reranker, law_text):
    import random

    from tests.engine.test_tokenization import ATOMS

    engine = qwen3_reranker.engine
    rng = random.Random(3)
    for _ in range(30):
        docs = ["".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 400))) for _ in range(5)]
        docs.append(law_text[: rng.randint(0, 5000)])
        for mode in ("truncate", "chunk"):
            bound = engine.token_upper_bound(QUERY, docs, long_document=mode)
            assert engine.prepare(QUERY, docs, long_document=mode).num_tokens <= bound
