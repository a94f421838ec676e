"""The HTTP app on a runtime: /health waits for every component, retrieval without an
embedding model, per-request retrieval limits, bodies without a content type, /v1/models."""

from __future__ import annotations

import asyncio
import json

import pytest

from finerank.runtime import Runtime
from finerank.server.app import create_app
from tests.server.conftest import asgi_client, tiny_settings

ARTICLES = [
    {
        "id": "a63",
        "text": "第六十三条 违反本法规定，从事危害网络安全的活动的，处五日以下拘留，并处罚款。",
    },
    {"id": "a21", "text": "第二十一条 国家实行网络安全等级保护制度。"},
    {"id": "d45", "text": "第四十五条 不履行数据安全保护义务的，处五万元以上五十万元以下罚款。"},
]
QUERY = "危害网络安全 罚款"


@pytest.fixture(scope="module")
def bm25_data_dir(tmp_path_factory):
    """A data directory holding a BM25-only collection ``laws`` (built without an embedder)."""
    from finerank.retrieval.chunkers import Document, get_chunker
    from finerank.retrieval.ingest import ingest_documents
    from finerank.retrieval.store import VectorStore

    data_dir = tmp_path_factory.mktemp("bm25-only") / "qdrant"
    store = VectorStore.open(data_dir=data_dir)
    try:
        documents = [Document(a["id"], a["text"], {}, a["id"]) for a in ARTICLES]
        ingest_documents(documents, store=store, collection="laws", chunker=get_chunker("legal"))
    finally:
        store.close()
    return data_dir


async def test_a_search_right_after_health_turns_200_is_answered(
    qwen3_reranker_dir, qwen3_embedding_dir, bm25_data_dir, tmp_path
):
    """Every component loads in the background; until the last one is ready /health is 503
    naming it and searches are 503 (never a 500), and the first search after /health turns
    200 is answered."""
    import shutil

    data_dir = tmp_path / "qdrant"
    shutil.copytree(bm25_data_dir, data_dir, ignore=shutil.ignore_patterns(".lock"))
    settings = tiny_settings(
        qwen3_reranker_dir, embedding_model=str(qwen3_embedding_dir), data_dir=data_dir
    )
    app = create_app(settings)  # loads reranker, then embedder, then store
    search = {"collection": "laws", "query": QUERY, "mode": "bm25", "top_n": 2}
    seen_loading: set[str] = set()
    async with asgi_client(app) as client:
        for _ in range(3000):
            health = await client.get("/health")
            if health.status_code == 200:
                break
            error = health.json()["error"]
            assert health.status_code == 503 and error["type"] == "service_unavailable"
            loading = [name for name, state in error["components"].items() if state != "ready"]
            if loading:
                assert loading[0] in error["message"]
            else:  # every component loaded, the services not started yet: a short window
                assert "starting the services" in error["message"]
            seen_loading.update(loading)
            early = await client.post("/v1/search", json=search)
            if early.status_code == 200:  # the last component became ready meanwhile
                assert (await client.get("/health")).status_code == 200
                continue
            assert early.status_code == 503, early.text  # never a 500
            assert "not ready" in early.json()["error"]["message"]
            await asyncio.sleep(0.01)
        answered = await client.post("/v1/search", json=search)  # right after the 200
        assert health.status_code == 200
        assert health.json()["components"] == {
            "reranker": "ready",
            "embedder": "ready",
            "store": "ready",
        }
        assert answered.status_code == 200, answered.text
        body = answered.json()
        assert body["reranked"] == body["candidates"] >= 2 and len(body["hits"]) == 2
    assert "store" in seen_loading  # the store was still loading after the reranker was ready


@pytest.fixture
async def bm25_client(qwen3_reranker, qwen3_reranker_dir, bm25_data_dir, tmp_path):
    """The app with a reranker and a store, and no embedding model."""
    import shutil

    data_dir = tmp_path / "qdrant"
    shutil.copytree(bm25_data_dir, data_dir, ignore=shutil.ignore_patterns(".lock"))
    settings = tiny_settings(
        qwen3_reranker_dir,
        data_dir=data_dir,
        max_query_chars=40,
        max_recall_k=50,
        max_rerank_k=20,
        max_chunks_per_request=3,
    )
    runtime = Runtime(settings, reranker=qwen3_reranker)
    async with asgi_client(create_app(runtime=runtime)) as client:
        for _ in range(600):
            if (await client.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        yield client


async def test_bm25_collection_searchable_without_an_embedding_model(bm25_client, qwen3_reranker):
    # curl -d sends a form content type: the body is JSON all the same
    body = json.dumps({"collection": "laws", "query": QUERY, "mode": "bm25", "top_n": 3})
    response = await bm25_client.post(
        "/v1/search", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert response.json()["reranked"] == response.json()["candidates"] == len(hits)
    texts = [f"{h['context']}\n{h['text']}" if h["context"] else h["text"] for h in hits]
    want = qwen3_reranker.rerank(QUERY, texts)
    assert [h["rerank_score"] for h in hits] == pytest.approx(
        sorted((r.score for r in want), reverse=True), abs=1e-6
    )
    for mode in ("dense", "hybrid"):
        refused = await bm25_client.post(
            "/v1/search", json={"collection": "laws", "query": QUERY, "mode": mode}
        )
        assert refused.status_code == 400, refused.text
        assert "no dense vectors" in refused.json()["error"]["message"]
    embeddings = await bm25_client.post("/v1/embeddings", json={"input": "x"})
    assert embeddings.status_code == 404
    assert "--embedding-model" in embeddings.json()["error"]["message"]
    models = (await bm25_client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["kind"]) for m in models] == [("tiny", "reranker")]


async def test_per_request_retrieval_limits_have_their_own_names(bm25_client):
    async def error(path: str, body: dict) -> dict:
        response = await bm25_client.post(path, json=body)
        assert response.status_code == 413, response.text
        return response.json()["error"]

    search = {"collection": "laws", "mode": "bm25"}
    e = await error("/v1/search", {**search, "query": "长" * 41})
    assert (e["limit"], e["limit_value"], e["value"]) == ("max_query_chars", 40, 41)
    e = await error("/v1/search", {**search, "query": QUERY, "recall_k": 1500})
    assert (e["limit"], e["value"]) == ("max_recall_k", 1500)
    assert "recall_k=1500 > max_recall_k=50" in e["message"] and "split" not in e["message"]
    e = await error("/v1/search", {**search, "query": QUERY, "recall_k": 30, "rerank_k": 21})
    assert (e["limit"], e["value"]) == ("max_rerank_k", 21)
    # without rerank_k every candidate is reranked, up to the limit: no error
    ok = await bm25_client.post("/v1/search", json={**search, "query": QUERY, "recall_k": 50})
    assert ok.status_code == 200
    # an ingest that would make more chunks than allowed writes nothing
    documents = [f"第{n}条 内容{n}。" for n in "一二三四"]
    e = await error("/v1/collections/more/documents", {"documents": documents, "chunker": "legal"})
    assert (e["limit"], e["limit_value"], e["value"]) == ("max_chunks_per_request", 3, 4)
    assert (await bm25_client.get("/v1/collections/more")).status_code == 404


async def test_models_list_every_served_model_with_its_kind(
    qwen3_reranker, qwen3_embedder_loaded, tmp_path, qwen3_reranker_dir
):
    settings = tiny_settings(qwen3_reranker_dir, data_dir=tmp_path / "qdrant")
    runtime = Runtime(settings, reranker=qwen3_reranker, embedder=qwen3_embedder_loaded)
    async with asgi_client(create_app(runtime=runtime)) as client:
        for _ in range(600):
            if (await client.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        models = (await client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["kind"]) for m in models] == [
        ("tiny", "reranker"),
        (qwen3_embedder_loaded.name, "embedding"),
    ]
    assert models[1]["dimensions"] == 64 and models[0]["family"] == "qwen3"


@pytest.fixture(scope="module")
def qwen3_embedder_loaded(qwen3_embedding_dir):
    from finerank.retrieval.embedder import Embedder

    return Embedder.from_pretrained(qwen3_embedding_dir, device="cpu", dtype="float32")
