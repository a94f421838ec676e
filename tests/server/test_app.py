"""The HTTP app in-process (httpx.ASGITransport): dialects, errors, limits, auth, metrics."""

from __future__ import annotations

import asyncio
import sys
import types

import httpx
import pytest

from finerank.server.app import create_app
from tests.server.conftest import asgi_client, parse_metrics, tiny_settings

QUERY = "Which city is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "France borders Spain."]


def _ranked(reranker, **kwargs):
    return [(r.index, r.score, r.logit) for r in reranker.rerank(QUERY, DOCS, **kwargs)]


def _assert_ranking(got: list[tuple[int, float]], want: list[tuple[int, float, float]]) -> None:
    assert [index for index, _ in got] == [index for index, _, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score, _ in want], abs=1e-6)


def _check_error(response: httpx.Response, status: int, *needles: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["type"] and error["message"]
    for needle in needles:
        assert needle in error["message"], error["message"]
    return error


# ---- dialects -------------------------------------------------------------------------------
async def test_v1_rerank_is_jina_vllm_shaped_and_matches_python(client, qwen3_reranker):
    response = await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "model", "usage", "results"} and body["model"] == "tiny"
    assert body["usage"]["prompt_tokens"] == qwen3_reranker.count_tokens(QUERY, DOCS)
    want = _ranked(qwen3_reranker)
    got = [(r["index"], r["relevance_score"]) for r in body["results"]]
    _assert_ranking(got, want)
    # Documents come back verbatim (never with template text) by default on /v1.
    assert [r["document"]["text"] for r in body["results"]] == [DOCS[i] for i, _, _ in want]


async def test_v2_rerank_is_cohere_shaped(client, qwen3_reranker):
    response = await client.post(
        "/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS, "top_n": 2}
    )
    body = response.json()
    assert set(body) == {"id", "results", "meta"}
    assert body["meta"]["billed_units"] == {"search_units": 1}
    assert body["meta"]["tokens"]["input_tokens"] == qwen3_reranker.count_tokens(QUERY, DOCS)
    want = _ranked(qwen3_reranker, top_n=2)
    _assert_ranking([(r["index"], r["relevance_score"]) for r in body["results"]], want)
    assert all("document" not in r for r in body["results"])
    asked = await client.post(
        "/v2/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": True}
    )
    assert {r["document"]["text"] for r in asked.json()["results"]} == set(DOCS)


async def test_plain_rerank_with_texts_is_tei_shaped(client, qwen3_reranker):
    response = await client.post(
        "/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}
    )
    body = response.json()
    assert isinstance(body, list)
    want = _ranked(qwen3_reranker)
    _assert_ranking([(r["index"], r["score"]) for r in body], want)
    assert [r["text"] for r in body] == [DOCS[i] for i, _, _ in want]
    raw = await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert [r["score"] for r in raw.json()] == pytest.approx([lg for _, _, lg in want], abs=1e-5)
    assert all("text" not in r for r in raw.json())
    # With "documents", /rerank answers in the Jina/vLLM shape.
    jina = await client.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert set(jina.json()) == {"id", "model", "usage", "results"}


async def test_aliases_objects_and_top_n_zero(client, qwen3_reranker):
    docs = [{"text": d, "title": "ignored"} for d in DOCS]
    base = {"query": QUERY, "documents": docs}
    full = (await client.post("/v1/rerank", json={**base, "top_n": 0})).json()["results"]
    assert len(full) == 3
    top_k = (await client.post("/v1/rerank", json={**base, "top_k": 1})).json()["results"]
    assert [r["index"] for r in top_k] == [full[0]["index"]]
    instruction = "Judge whether the document names a capital"
    by_alias = (await client.post("/v1/rerank", json={**base, "instruct": instruction})).json()
    want = _ranked(qwen3_reranker, instruction=instruction)
    assert [r["relevance_score"] for r in by_alias["results"]] == pytest.approx(
        [s for _, s, _ in want], abs=1e-6
    )
    no_docs = (await client.post("/v1/rerank", json={**base, "return_documents": False})).json()
    assert all("document" not in r for r in no_docs["results"])


async def test_chunk_mode_results_carry_the_winning_span(client, qwen3_reranker):
    long_doc = " ".join(
        f"Part {i}: rivers, mountains and the capital of France." for i in range(200)
    )
    body = {
        "query": QUERY,
        "documents": [long_doc],
        "long_document": "chunk",
        "max_tokens_per_doc": 64,
    }
    result = (await client.post("/v1/rerank", json=body)).json()["results"][0]
    want = qwen3_reranker.rerank(QUERY, [long_doc], long_document="chunk", max_tokens_per_doc=64)
    start, end = want[0].span
    assert result["span"] == {"start": start, "end": end, "text": long_doc[start:end]}
    assert result["document"]["text"] == long_doc
    assert result["relevance_score"] == pytest.approx(want[0].score, abs=1e-6)


async def test_score_endpoint_is_vllm_shaped(client, qwen3_reranker):
    response = await client.post("/v1/score", json={"text_1": QUERY, "text_2": DOCS})
    body = response.json()
    assert body["object"] == "list" and body["model"] == "tiny"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert [d["score"] for d in body["data"]] == pytest.approx(
        qwen3_reranker.score([(QUERY, d) for d in DOCS]), abs=1e-6
    )
    mismatch = await client.post("/v1/score", json={"text_1": ["a", "b"], "text_2": DOCS})
    _check_error(mismatch, 400, "text_1 has 2 items")


async def test_models_health_docs(client):
    models = (await client.get("/v1/models")).json()
    assert [(m["id"], m["kind"]) for m in models["data"]] == [("tiny", "reranker")]
    assert models["data"][0]["family"] == "qwen3"
    health = (await client.get("/health")).json()
    assert health == {"status": "ok", "model": "tiny", "components": {"reranker": "ready"}}
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/score"} <= set(spec["paths"])
    assert "query" in spec["components"]["schemas"]["RerankRequest"]["properties"]


# ---- errors ---------------------------------------------------------------------------------
async def test_unknown_model_is_404_naming_the_served_model(client):
    response = await client.post(
        "/v1/rerank", json={"model": "bge-reranker", "query": QUERY, "documents": DOCS}
    )
    error = _check_error(response, 404, "'bge-reranker'", "served model: 'tiny'")
    assert error["type"] == "model_not_found"


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"", 422, "object"),
        (b"[1, 2]", 422, "object"),
        (b'{"documents": ["a"]}', 422, "query: Field required"),
        (b'{"query": "q"}', 422, "'documents'"),
        (b'{"query": "q", "documents": ["a"], "texts": ["b"]}', 422, "not both"),
        (b'{"query": 5, "documents": ["a"]}', 422, "query"),
        (b'{"query": "q", "documents": [1]}', 422, "documents[0] must be a string or an object"),
        (b'{"query": "q", "documents": ["a", {"title": "x"}]}', 422, "documents[1] must be"),
        (b'{"query": "q", "documents": ["a"], "top_n": -1}', 422, "top_n"),
        (b'{"query": "q", "documents": ["a"], "top_n": "x"}', 422, "top_n"),
        (b'{"query": "q", "documents": ["a"], "long_document": "fold"}', 422, "long_document"),
        (b'{"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}', 422, "max_tokens"),
    ],
)
async def test_malformed_bodies_are_4xx_with_a_message(client, content, status, needle):
    response = await client.post(
        "/v1/rerank", content=content, headers={"content-type": "application/json"}
    )
    _check_error(response, status, needle)


async def test_body_without_json_content_type_is_accepted(client):
    # curl -d sends application/x-www-form-urlencoded; the body is still JSON.
    response = await client.post(
        "/v1/rerank",
        content=b'{"query": "q", "documents": ["a"]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


async def test_limits_are_413_naming_limit_and_value(make_app):
    app = make_app(max_documents_per_request=3, max_tokens_per_request=400, max_body_bytes=2048)
    async with asgi_client(app) as c:
        error = _check_error(
            await c.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 4}),
            413,
            "max_documents_per_request=3",
        )
        assert (error["limit"], error["limit_value"], error["value"]) == (
            "max_documents_per_request",
            3,
            4,
        )
        error = _check_error(
            await c.post("/v1/rerank", json={"query": "q", "documents": ["word " * 100] * 3}),
            413,
            "max_tokens_per_request=400",
        )
        assert error["value"] > 400
        error = _check_error(
            await c.post("/v1/rerank", json={"query": "q", "documents": ["x" * 3000]}),
            413,
            "max_body_bytes=2048",
        )
        assert error["limit"] == "max_body_bytes" and error["value"] > 2048

        async def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(4):
                yield b" " * 1000

        streamed = await c.post("/v1/rerank", content=chunks())
        assert _check_error(streamed, 413, "max_body_bytes")["value"] > 2048
        score = await c.post("/v1/score", json={"text_1": "q", "text_2": ["d"] * 4})
        _check_error(score, 413, "max_documents_per_request")


async def test_queue_full_is_429_with_retry_after(make_app, gated):
    reranker, engine = gated
    app = make_app(reranker=reranker, max_queue_pairs=3)
    async with asgi_client(app) as c:
        engine.gate.clear()
        body = {"query": QUERY, "documents": DOCS}
        running = asyncio.create_task(c.post("/v1/rerank", json=body))
        while not engine.entered.is_set():
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(c.post("/v1/rerank", json=body))
        service = app.state.runtime.rerank
        while service.queued_pairs < 3:
            await asyncio.sleep(0.01)
        refused = await c.post("/v1/rerank", json=body)
        error = _check_error(refused, 429, "max_queue_pairs=3")
        assert error["type"] == "queue_full" and int(refused.headers["retry-after"]) >= 1
        engine.gate.set()
        assert (await running).status_code == 200 and (await queued).status_code == 200


async def test_health_is_503_until_the_model_is_loaded(qwen3_reranker_dir):
    settings = tiny_settings(qwen3_reranker_dir)
    app = create_app(settings)  # loads in the lifespan, in the background
    async with asgi_client(app) as c:
        first = await c.get("/health")
        error = _check_error(first, 503, "reranker")
        assert error["components"]["reranker"] in ("pending", "loading")
        _check_error(await c.post("/v1/rerank", json={"query": "q", "documents": ["a"]}), 503)
        for _ in range(600):
            if (await c.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await c.get("/health")).status_code == 200
        assert (await c.post("/v1/rerank", json={"query": "q", "documents": ["a"]})).is_success
    assert not app.state.runtime.ready  # the app started the runtime, so it stopped it


async def test_failed_load_is_reported_by_health(tmp_path):
    errors = []
    app = create_app(tiny_settings(tmp_path / "missing"), on_load_error=errors.append)
    async with asgi_client(app) as c:
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.05)
        error = _check_error(await c.get("/health"), 503, "reranker failed to load", "not found")
        assert error["components"] == {"reranker": "failed"}


# ---- auth -----------------------------------------------------------------------------------
async def test_api_keys(make_app):
    app = make_app(api_keys=["key-one", "key-two"])
    body = {"query": QUERY, "documents": DOCS}
    async with asgi_client(app) as c:
        _check_error(await c.post("/v1/rerank", json=body), 401, "API key")
        wrong = await c.post("/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        for key in ("key-one", "key-two"):
            ok = await c.post("/v2/rerank", json=body, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert (await c.get("/v1/models")).status_code == 401
        assert (await c.get("/health")).status_code == 200  # open by default
        assert (await c.get("/metrics")).status_code == 200
    protected = make_app(api_keys=["k"], protect_health=True)
    async with asgi_client(protected) as c:
        assert (await c.get("/health")).status_code == 401
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/health", headers={"Authorization": "Bearer k"})).status_code == 200


# ---- batching and metrics -------------------------------------------------------------------
async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    make_app, qwen3_reranker
):
    queries = [f"question number {i} about topic {i % 7}" for i in range(50)]
    # The Python API's scores for all 150 pairs in one call, ranked per query.
    scores = qwen3_reranker.score([(q, d) for q in queries for d in DOCS])
    expected = {
        q: sorted(((i, round(scores[n * 3 + i], 6)) for i in range(3)), key=lambda p: -p[1])
        for n, q in enumerate(queries)
    }
    async with asgi_client(make_app()) as c:
        responses = await asyncio.gather(
            *(c.post("/v1/rerank", json={"query": q, "documents": DOCS}) for q in queries)
        )
        for query, response in zip(queries, responses, strict=True):
            got = [(r["index"], round(r["relevance_score"], 6)) for r in response.json()["results"]]
            assert got == expected[query]
        metrics = (await c.get("/metrics")).text
    samples = parse_metrics(metrics)
    assert samples['finerank_requests_total{route="/v1/rerank",status="200"}'] == 50
    # Some forward pass merged several requests.
    assert samples["finerank_batch_requests_sum"] > samples["finerank_batch_requests_count"]
    assert samples["finerank_tokens_scored_total"] >= sum(
        qwen3_reranker.count_tokens(q, DOCS) for q in queries
    )
    for name in (
        "finerank_request_duration_seconds_count",
        "finerank_queue_depth_pairs",
        "finerank_in_flight_requests",
        "finerank_batch_pairs_count",
    ):
        assert any(key.startswith(name) for key in samples), name


def _pairs(results):
    return [(r.index, round(r.score, 6)) for r in results]


# ---- per-request timings (TEI's headers and phase histograms) -------------------------------
TIMING_HEADERS = ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time")
PHASES = ("tokenize", "queue", "forward", "total")


def _timing_headers(response: httpx.Response) -> tuple[int, int, int, int]:
    """The TEI timing headers of a response: whole milliseconds, phases within the total."""
    values = [response.headers.get(name, "") for name in TIMING_HEADERS]
    assert all(value.isdigit() for value in values), dict(response.headers)
    tokenize, queue, forward, total = map(int, values)
    assert tokenize + queue + forward <= total
    return tokenize, queue, forward, total


def _phase(samples: dict[str, float], phase: str, what: str, service: str = "rerank") -> float:
    return samples.get(f'finerank_request_{phase}_seconds_{what}{{service="{service}"}}', 0.0)


async def test_every_rerank_dialect_sends_timing_headers_and_is_timed_once(client):
    documents = {"query": QUERY, "documents": DOCS}
    responses = [
        await client.post("/v1/rerank", json=documents),
        await client.post("/v2/rerank", json=documents),
        await client.post("/rerank", json=documents),
        await client.post("/rerank", json={"query": QUERY, "texts": DOCS}),
        await client.post("/v1/score", json={"text_1": QUERY, "text_2": DOCS}),
    ]
    too_many = await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS * 400})
    samples = parse_metrics((await client.get("/metrics")).text)
    for response in responses:
        assert response.status_code == 200, response.text
        _timing_headers(response)
    assert isinstance(responses[3].json(), list)  # TEI's bare list, unchanged
    _check_error(too_many, 413, "max_documents_per_request")
    assert not any(name in too_many.headers for name in TIMING_HEADERS)
    # one observation per answered request (the refused one is not timed), sums in order
    assert [_phase(samples, phase, "count") for phase in PHASES] == [len(responses)] * 4
    sums = [_phase(samples, phase, "sum") for phase in PHASES]
    assert min(sums) >= 0 and sum(sums[:3]) <= sums[3]
    assert sums[0] > 0 and sums[2] > 0  # tokenizing and the model took some time
    assert _phase(samples, "total", "count", service="embed") == 0


async def test_a_request_cut_over_batches_is_timed_from_its_first_batch_to_its_last(make_app):
    documents = [f"document {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(8)]
    async with asgi_client(make_app(max_batch_tokens=256)) as c:
        response = await c.post("/v1/rerank", json={"query": QUERY, "documents": documents})
        samples = parse_metrics((await c.get("/metrics")).text)
    assert response.status_code == 200
    _timing_headers(response)
    assert samples["finerank_batch_duration_seconds_count"] >= 2  # the request was cut
    assert _phase(samples, "forward", "count") == 1
    # its forward span holds every batch that carried its pairs
    assert _phase(samples, "forward", "sum") >= samples["finerank_batch_duration_seconds_sum"]
    phases = [_phase(samples, phase, "sum") for phase in PHASES]
    assert sum(phases[:3]) <= phases[3]


# ---- extension hooks ------------------------------------------------------------------------
def test_ui_hook_receives_a_backend_on_the_apps_runtime(make_app, monkeypatch):
    from finerank.ui.backend import UIBackend

    module = types.ModuleType("finerank.ui.app")
    calls = []
    module.mount_ui = lambda app, backend, settings: calls.append((app, backend, settings))
    monkeypatch.setitem(sys.modules, "finerank.ui.app", module)
    app = make_app(ui=True)
    [(mounted_on, backend, settings)] = calls
    assert mounted_on is app and settings.ui
    assert isinstance(backend, UIBackend) and backend.runtime is app.state.runtime


# ---- edge cases and other model families ----------------------------------------------------
async def test_empty_document_list_is_an_empty_answer(client):
    body = (await client.post("/v1/rerank", json={"query": QUERY, "documents": []})).json()
    assert body["results"] == [] and body["usage"]["prompt_tokens"] == 0
    tei = await client.post("/rerank", json={"query": QUERY, "texts": []})
    assert tei.json() == []


async def test_seq_cls_cross_encoder_is_served_with_the_same_scores(make_app, bert_reranker):
    async with asgi_client(make_app(reranker=bert_reranker)) as c:
        body = (await c.post("/v2/rerank", json={"query": QUERY, "documents": DOCS})).json()
    want = [(r.index, r.score, r.logit) for r in bert_reranker.rerank(QUERY, DOCS)]
    _assert_ranking([(r["index"], r["relevance_score"]) for r in body["results"]], want)
