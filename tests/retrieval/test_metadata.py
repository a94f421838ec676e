"""Stored data that would break search (issue 11.5): text and metadata are checked at ingest
(UTF-8, depth, size, JSON numbers) on every path, and what a search returns of a stored point
is made safe, so one bad point cannot fail other users' searches."""

from __future__ import annotations

import asyncio
import json

import pytest

from finerank.errors import InvalidInputError
from finerank.retrieval.metadata import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    check_metadata,
    safe_metadata,
)


def nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


GOOD = {"law": "网络安全法", "article_no": 63, "score": 0.5, "tags": ["a", None, True], "x": {}}
BAD = [
    ({"title": "bad\ud800"}, "metadata.title is not valid UTF-8"),
    ({"tags": ["ok", "\udfff"]}, "metadata.tags[1] is not valid UTF-8"),
    ({"k\ud83d": 1}, "a key of metadata is not valid UTF-8"),
    (nested(MAX_METADATA_DEPTH + 1), "nested too deep"),
    (nested(400), "nested too deep"),
    ({"n": 2**64}, "64-bit integer range"),
    ({"n": float("nan")}, "finite number"),
    ({"n": float("inf")}, "finite number"),
    ({"blob": "x" * MAX_METADATA_BYTES}, "bytes as JSON"),
    ({"k" * 300: 1}, "key of 300 characters"),
    ({"when": object()}, "must be a JSON value"),
    ({1: "a"}, "key that is not a string"),
]


def test_good_metadata_passes():
    check_metadata(GOOD)
    check_metadata(nested(MAX_METADATA_DEPTH - 1))  # the object itself is one level


@pytest.mark.parametrize(("metadata", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_metadata_is_refused_with_what_to_fix(metadata, message):
    with pytest.raises(InvalidInputError, match="doc.jsonl#7: ") as caught:
        check_metadata(metadata, where="doc.jsonl#7")
    assert message in str(caught.value)


def test_a_stored_point_is_returned_safely():
    """Points written before the checks: lone surrogates become U+FFFD, non-finite floats
    null, anything too deep "…"; the result can be serialized as JSON."""
    from finerank.retrieval.search import to_hit
    from finerank.retrieval.store import StoredHit

    payload = {
        "text": "bad\ud800text",
        "source": "s\udc00",
        "metadata": {"t": "x\ud800", "n": float("nan"), "deep": nested(400), "ok": [1, "a"]},
    }
    hit = to_hit(StoredHit(chunk_id="c", score=1.0, rank=1, payload=payload))
    assert hit.text == "bad\ufffdtext" and hit.source == "s\ufffd"
    assert hit.metadata["t"] == "x\ufffd" and hit.metadata["n"] is None
    assert hit.metadata["ok"] == [1, "a"]
    json.dumps(hit.to_dict(), ensure_ascii=False).encode("utf-8")
    assert safe_metadata(GOOD) == GOOD


def test_jsonl_with_a_lone_surrogate_is_refused_before_writing(tmp_path):
    """``finerank index`` path: one bad record stops the run before anything is written, and
    the message names the record."""
    from finerank.retrieval.chunkers import get_chunker
    from finerank.retrieval.ingest import ingest
    from finerank.retrieval.store import VectorStore

    corpus = tmp_path / "laws.jsonl"
    corpus.write_text(
        '{"_id": "a1", "text": "第一条 网络安全。", "law": "ok"}\n'
        '{"_id": "a2", "text": "第二条 罚款。", "law": "bad \\ud800"}\n',
        encoding="utf-8",
    )
    store = VectorStore.open(data_dir=tmp_path / "qdrant")
    try:
        with pytest.raises(InvalidInputError, match=r"laws\.jsonl#a2: metadata\.law is not"):
            ingest([corpus], store=store, collection="laws", chunker=get_chunker("window"))
        assert "laws" not in {info.name for info in store.list_collections()}
    finally:
        store.close()


async def test_poison_metadata_is_refused_over_http_and_search_keeps_working(
    qwen3_reranker, qwen3_reranker_dir, tmp_path
):
    from finerank.runtime import Runtime
    from finerank.server.app import create_app
    from tests.server.conftest import asgi_client, tiny_settings

    settings = tiny_settings(qwen3_reranker_dir, data_dir=tmp_path / "qdrant")
    app = create_app(runtime=Runtime(settings, reranker=qwen3_reranker))
    good = {"id": "a1", "text": "第一条 网络安全 罚款。", "metadata": {"law": "网络安全法"}}
    poison = [
        nested(MAX_METADATA_DEPTH + 4),  # under the JSON parser's limit: reaches the check
        {"n": 2**70},
        {"blob": "x" * (MAX_METADATA_BYTES + 1)},
    ]
    async with asgi_client(app) as client:
        for _ in range(600):
            if (await client.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        path = "/v1/collections/laws/documents"
        added = await client.post(path, json={"documents": [good]})
        assert added.status_code == 200, added.text
        for metadata in poison:
            doc = {"id": "a2", "text": "第二条 罚款。", "metadata": metadata}
            refused = await client.post(path, json={"documents": [good, doc]})
            assert refused.status_code == 400, refused.text
            assert refused.json()["detail"].startswith("a2: metadata")
        # A lone surrogate in the JSON text itself.
        raw = '{"documents": [{"id": "a3", "text": "x", "metadata": {"t": "\\ud800"}}]}'
        refused = await client.post(path, content=raw, headers={"content-type": "application/json"})
        assert refused.status_code == 400 and refused.json()["detail"]
        search = {"collection": "laws", "query": "网络安全 罚款", "mode": "bm25", "top_n": 5}
        found = await client.post("/v1/search", json=search)
        assert found.status_code == 200, found.text
        assert [h["metadata"] for h in found.json()["hits"]] == [{"law": "网络安全法"}]


def test_a_jsonl_line_nested_past_the_parser_is_bad_input():
    from finerank.jsonl import parse_documents_text, parse_jsonl

    line = '{"text": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(InvalidInputError, match=r"f\.jsonl:1: JSON nested too deep"):
        list(parse_jsonl([line], "f.jsonl"))
    with pytest.raises(InvalidInputError, match=r"f\.jsonl:1: JSON nested too deep"):
        parse_documents_text(line, "f.jsonl")
