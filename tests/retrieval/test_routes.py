"""The retrieval HTTP routes inside the real app (tiny Qwen3 reranker + tiny Qwen3 embedder)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from finerank.errors import ServiceUnavailableError
from finerank.runtime import Runtime
from finerank.server.app import create_app
from finerank.settings import Settings

CSL, DSL = {"law": "网络安全法"}, {"law": "数据安全法"}
ARTICLES = [
    {
        "id": "a63",
        "metadata": CSL,
        "text": "第六十三条 违反本法第二十七条规定，从事危害网络安全的活动，尚不构成犯罪的，"
        "由公安机关没收违法所得，处五日以下拘留，可以并处五万元以上五十万元以下罚款。",
    },
    {"id": "a21", "metadata": CSL, "text": "第二十一条 国家实行网络安全等级保护制度。"},
    {
        "id": "d45",
        "metadata": DSL,
        "text": "第四十五条 开展数据处理活动的组织、个人不履行数据安全保护义务的，"
        "处五万元以上五十万元以下罚款。",
    },
    "第一条 为了保障网络安全，制定本法。",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory, qwen3_reranker_dir, qwen3_embedding_dir, qwen3_reranker):
    settings = Settings(
        model=str(qwen3_reranker_dir),
        embedding_model=str(qwen3_embedding_dir),
        device="cpu",
        dtype="float32",
        data_dir=tmp_path_factory.mktemp("qdrant-server"),
        max_documents_per_request=10,
    )
    app = create_app(runtime=Runtime(settings, reranker=qwen3_reranker))
    with TestClient(app, base_url="http://localhost") as test_client:
        wait_until_healthy(test_client)
        yield test_client


def wait_until_healthy(client, timeout_s: float = 120) -> None:
    """Poll ``/health`` until 200 (the embedder and the store load in the background)."""
    import time

    deadline = time.monotonic() + timeout_s
    while (response := client.get("/health")).status_code != 200:
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, response.text
        time.sleep(0.02)


def test_embeddings_openai_format(client, qwen3_embedder):
    reference = qwen3_embedder
    texts = ["hello world", "网络安全法"]
    response = client.post("/v1/embeddings", json={"input": texts, "model": "m"})
    assert response.status_code == 404 and "not served" in response.json()["error"]["message"]
    body = client.post("/v1/embeddings", json={"input": texts}).json()
    assert body["object"] == "list" and body["model"] == reference.name
    assert [row["index"] for row in body["data"]] == [0, 1]
    vectors = np.array([row["embedding"] for row in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, reference.embed_documents(texts), atol=1e-6)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 2

    single = client.post(
        "/v1/embeddings",
        json={
            "input": "hello world",
            "model": reference.name,
            "dimensions": 16,
            "encoding_format": "base64",
            "user": "ignored",
        },
    ).json()
    decoded = np.frombuffer(base64.b64decode(single["data"][0]["embedding"]), dtype="<f4")
    expected = reference.embed_documents(["hello world"], dimensions=16)[0]
    np.testing.assert_allclose(decoded, expected, atol=1e-6)
    query = client.post(
        "/v1/embeddings", json={"input": ["q"], "input_type": "query", "instruction": "Find laws"}
    ).json()
    expected = reference.embed_queries(["q"], instruction="Find laws")[0]
    np.testing.assert_allclose(query["data"][0]["embedding"], expected, atol=1e-6)
    metrics = client.get("/metrics").text
    samples = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["finerank_embedding_inputs_total"] >= 4  # texts through the batching path
    assert samples["finerank_embedding_batch_requests_count"] >= 3


def _embed_phase_counts(client) -> list[float]:
    from tests.server.conftest import parse_metrics

    samples = parse_metrics(client.get("/metrics").text)
    return [
        samples.get(f'finerank_request_{phase}_seconds_count{{service="embed"}}', 0.0)
        for phase in ("tokenize", "queue", "forward", "total")
    ]


def test_embeddings_send_timing_headers_and_are_timed_once(client):
    names = ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time")
    before = _embed_phase_counts(client)
    response = client.post("/v1/embeddings", json={"input": ["hello world", "网络安全法"]})
    refused = client.post("/v1/embeddings", json={"input": ["x"] * 11})
    after = _embed_phase_counts(client)
    assert response.status_code == 200 and refused.status_code == 413
    values = [response.headers.get(name, "") for name in names]
    assert all(value.isdigit() for value in values), dict(response.headers)
    tokenize, queue, forward, total = map(int, values)
    assert tokenize + queue + forward <= total
    assert not any(name in refused.headers for name in names)
    assert after == [count + 1 for count in before]  # the refused request is not timed


def test_remote_embedder_against_the_server(client, qwen3_embedder):
    """RemoteEmbedder speaks the OpenAI format; a Qwen3 query prompt sent as plain text gives
    the same vector as a local query embedding."""
    from finerank.retrieval.embedder import RemoteEmbedder

    local = qwen3_embedder
    remote = RemoteEmbedder("http://localhost/v1/", http_client=client, batch_size=2)
    assert remote.dimension == 64
    texts = ["a", "bb", "网络", "d", "e"]  # three requests of at most two texts
    np.testing.assert_allclose(
        remote.embed_documents(texts), local.embed_documents(texts), atol=1e-6
    )
    np.testing.assert_allclose(
        remote.embed_queries(["q"], instruction="Find laws"),
        local.embed_queries(["q"], instruction="Find laws"),
        atol=1e-6,
    )
    with pytest.raises(ServiceUnavailableError, match="answered 404"):
        RemoteEmbedder("http://localhost", http_client=client, model="other")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"input": []}, 400, "at least one"),
        ({"input": ["ok", ""]}, 400, "input[1] is empty"),
        ({"input": ["x"] * 11}, 413, "too many inputs"),
        ({"input": "x", "dimensions": 65}, 400, "larger than"),
        ({"input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"input": [1, 2]}, 422, "input"),
    ],
)
def test_embeddings_bad_requests(client, body, status, needle):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status
    assert needle in str(response.json())


def test_documents_search_and_collections(client, qwen3_reranker):
    added = client.post(
        "/v1/collections/laws/documents", json={"documents": ARTICLES, "chunker": "legal"}
    )
    assert added.status_code == 200, added.text
    assert added.json()["added"] == 4
    again = client.post(
        "/v1/collections/laws/documents", json={"documents": ARTICLES, "chunker": "legal"}
    ).json()
    assert (again["added"], again["unchanged_documents"]) == (0, 4)
    conflict = client.post(
        "/v1/collections/laws/documents", json={"documents": ["x"], "chunker": "window"}
    )
    assert conflict.status_code == 409 and "chunker" in conflict.json()["error"]["message"]

    listed = client.get("/v1/collections").json()["collections"]
    assert [(c["name"], c["points"], c["chunker"]["name"]) for c in listed] == [
        ("laws", 4, "legal")
    ]

    query = "非法入侵服务器罚款多少"
    body = client.post(
        "/v1/search", json={"collection": "laws", "query": query, "mode": "hybrid", "top_n": 3}
    ).json()
    hits = body["hits"]
    assert body["candidates"] == 4 and body["reranked"] == 4 and len(hits) == 3
    scores = [h["rerank_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # the served reranker gives the same scores as the Python API on the same texts
    texts = [f"{h['context']}\n{h['text']}" if h["context"] else h["text"] for h in hits]
    direct = qwen3_reranker.rerank(query, texts)
    np.testing.assert_allclose(sorted((r.score for r in direct), reverse=True), scores, rtol=1e-4)
    assert {h["first_stage_rank"] for h in hits} <= {1, 2, 3, 4}

    plain = client.post(
        "/v1/search",
        json={
            "collection": "laws",
            "query": "罚款",
            "mode": "bm25",
            "rerank": False,
            "filters": {"law": "数据安全法"},
        },
    ).json()
    assert [h["metadata"]["law"] for h in plain["hits"]] == ["数据安全法"]
    assert plain["hits"][0]["rerank_rank"] is None and plain["reranked"] == 0
    expanded = client.post(
        "/v1/search",
        json={"collection": "laws", "query": query, "mode": "hybrid+prf", "rerank": False},
    ).json()
    assert expanded["mode"] == "hybrid+prf" and expanded["candidates"] == 4

    missing = client.post("/v1/search", json={"collection": "nope", "query": "x"})
    assert missing.status_code == 404
    bad = client.post("/v1/search", json={"collection": "laws", "query": "x", "mode": "sparse"})
    assert bad.status_code == 422
    assert client.delete("/v1/collections/laws").json() == {"deleted": "laws"}
    assert client.get("/v1/collections/laws").status_code == 404
    assert client.delete("/v1/collections/laws").status_code == 404
