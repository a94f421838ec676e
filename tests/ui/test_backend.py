"""The page's backend and rendering, without a browser."""

from __future__ import annotations

import json

import pytest

from finerank.errors import NotFoundError, ServiceUnavailableError
from finerank.runtime import Runtime
from finerank.settings import Settings
from finerank.ui import render
from finerank.ui.app import example, example_documents, parse_documents
from finerank.ui.backend import UIBackend

LONG_DOCUMENT = (
    "第一段讲网络安全的总则和适用范围。" * 12
    + "违反本法第二十七条规定，由公安机关没收违法所得，处五日以下拘留，可以并处罚款。"
    + "最后一段讲附则和术语的含义。" * 12
)


@pytest.fixture(scope="module")
def short_runtime(qwen3_reranker_dir, tmp_path_factory):
    """A started runtime whose model reads at most 128 tokens per pair (chunk mode bites),
    with an empty store."""
    settings = Settings(
        model=str(qwen3_reranker_dir),
        max_length=128,
        device="cpu",
        dtype="float32",
        data_dir=tmp_path_factory.mktemp("ui-backend") / "qdrant",
    )
    runtime = Runtime(settings)
    runtime.start()
    yield runtime
    runtime.stop()


async def test_chunk_mode_highlights_the_winning_window(short_runtime):
    backend = UIBackend(short_runtime)
    short_service = short_runtime.rerank
    documents = [LONG_DOCUMENT, "罚款多少？短文档。"]
    query = "违法入侵的罚款"
    results = await backend.rerank(
        query, documents, instruction=None, top_n=None, long_document="chunk"
    )
    expected = short_service.reranker.rerank(query, documents, long_document="chunk")
    assert [(r.index, r.span) for r in results] == [(r.index, r.span) for r in expected]
    long_result = next(r for r in results if r.index == 0)
    start, end = long_result.span
    assert 0 < end - start < len(LONG_DOCUMENT)  # one window, not the whole text
    html = render.rerank_table(results)
    assert f"<mark>{LONG_DOCUMENT[start:end]}</mark>" in html


async def test_no_model_and_loading_model_say_so(qwen3_reranker, qwen3_reranker_dir):
    backend = UIBackend(Runtime(Settings()))
    assert backend.model_status().startswith("No model loaded")
    with pytest.raises(ServiceUnavailableError, match="no model loaded"):
        await backend.rerank("q", ["d"], instruction=None, top_n=None, long_document="truncate")
    not_started = Runtime(Settings(model=str(qwen3_reranker_dir)), reranker=qwen3_reranker)
    backend = UIBackend(not_started)
    assert "loading" in backend.model_status()
    with pytest.raises(ServiceUnavailableError, match="still loading"):
        await backend.rerank("q", ["d"], instruction=None, top_n=None, long_document="truncate")


async def test_empty_store_and_unknown_collection(short_runtime):
    backend = UIBackend(short_runtime)
    assert await backend.collections() == []
    with pytest.raises(NotFoundError, match="no collection: build one.*--data-dir"):
        await backend.search("", "q", instruction=None, mode="bm25", recall_k=5, top_n=5)
    with pytest.raises(NotFoundError):
        await backend.search("missing", "q", instruction=None, mode="bm25", recall_k=5, top_n=5)


async def test_no_store_configured_says_how_to_configure_one(qwen3_reranker):
    runtime = Runtime(Settings(model="tiny"), reranker=qwen3_reranker)
    runtime.start()
    try:
        with pytest.raises(ServiceUnavailableError, match="--data-dir"):
            await UIBackend(runtime).collections()
    finally:
        runtime.stop()


def test_documents_from_box_and_upload():
    from finerank.errors import InvalidInputError
    from finerank.ui.app import documents_from_upload
    from finerank.ui.uploads import UploadedFile

    assert parse_documents("a\n\n  b  \n") == ["a", "b"]
    lines = "\n".join(json.dumps({"text": t}) for t in ("x", "y\nz", "w"))
    upload = UploadedFile("docs.jsonl", lines.encode())
    assert documents_from_upload(upload) == (["x", "y\nz", "w"], "3 documents from docs.jsonl")
    upload = UploadedFile("docs.txt", "一\n\n二\n".encode())
    assert documents_from_upload(upload) == (["一", "二"], "2 documents from docs.txt")
    with pytest.raises(InvalidInputError, match=r"\.txt or \.jsonl"):
        documents_from_upload(UploadedFile("docs.csv", b"a,b"))
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        documents_from_upload(UploadedFile("docs.txt", b"\xff\xfe"))
    with pytest.raises(InvalidInputError, match="docs.jsonl:1: invalid JSON"):
        documents_from_upload(UploadedFile("docs.jsonl", b"{oops"))


def test_example_is_the_seed_legal_query():
    ex = example()
    assert ex["query"] == "非法获取敌公司的服务器数据并破坏服务器，应采取什么处置措施？罚款多少？"
    lines = example_documents().splitlines()
    assert len(lines) == len(ex["articles"]) >= 5
    assert any("第六十三条" in line and "罚款" in line for line in lines)


def test_movement_labels():
    assert render.movement(4, 1, 10) == ("↑3", "fr-up")
    assert render.movement(1, 3, 10) == ("↓2", "fr-down")
    assert render.movement(2, 2, 10) == ("=", "fr-same")
    assert render.movement(14, 2, 10) == ("new", "fr-new")
    assert render.highlighted("a<b>c", (1, 4)) == "a<mark>&lt;b&gt;</mark>c"


def test_standalone_app_redirects_to_the_page(tmp_path):
    from fastapi.testclient import TestClient

    from finerank.ui.app import create_ui_app

    app = create_ui_app(Settings(data_dir=tmp_path / "qdrant"))
    with TestClient(app, base_url="http://localhost") as client:
        root = client.get("/", follow_redirects=False)
        assert root.status_code in (302, 307) and root.headers["location"] == "/ui/"
        page = client.get("/ui/")
        assert page.status_code == 200 and "finerank" in page.text
