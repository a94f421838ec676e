"""``finerank index``, ``finerank search`` and ``finerank collections`` end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from finerank.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def law_file(shared_data):
    return shared_data / "laws" / "cybersecurity_law_2016.md"


def _run(*args: str, stderr: bool = False):
    """Exit code and stdout; with ``stderr`` (and for errors) stdout + stderr."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output if stderr or result.exit_code else result.stdout


def test_index_search_list_delete(tmp_path, law_file, qwen3_embedding_dir, qwen3_reranker_dir):
    data = str(tmp_path / "qdrant")
    code, out = _run(
        "index",
        str(law_file),
        "--collection",
        "laws",
        "--chunker",
        "legal",
        "--embedding-model",
        str(qwen3_embedding_dir),
        "--data-dir",
        data,
        "-q",
    )
    assert code == 0, out
    assert "laws: 1 files, 1 documents, 79 chunks: 79 added" in out
    code, out = _run(
        "index",
        str(law_file),
        "--collection",
        "laws",
        "--chunker",
        "legal",
        "--embedding-model",
        str(qwen3_embedding_dir),
        "--data-dir",
        data,
        "-q",
    )
    assert code == 0 and "0 added, 0 deleted, 1 files unchanged" in out

    code, out = _run(
        "search",
        "违反本法第二十七条规定 罚款",
        "--collection",
        "laws",
        "--mode",
        "bm25",
        "--no-rerank",
        "--json",
        "--top-n",
        "3",
        "--data-dir",
        data,
    )
    assert code == 0, out
    body = json.loads(out)
    assert body["mode"] == "bm25" and len(body["hits"]) == 3
    assert body["hits"][0]["metadata"]["article_cn"] == "第六十三条"
    assert body["hits"][0]["rerank_rank"] is None

    code, out = _run(
        "search",
        "罚款",
        "--collection",
        "laws",
        "--filter",
        "article_no=63",
        "--json",
        "--data-dir",
        data,
        "--model",
        str(qwen3_reranker_dir),
        "--instruction",
        "判断文档是否规定了处罚",
    )
    assert code == 0, out
    body = json.loads(out)
    assert body["mode"] == "hybrid"  # default with dense vectors, query model from metadata
    assert [h["metadata"]["article_no"] for h in body["hits"]] == [63]
    assert body["hits"][0]["rerank_rank"] == 1 and 0 < body["hits"][0]["rerank_score"] < 1

    code, out = _run(
        "search",
        "罚款",
        "--collection",
        "laws",
        "--mode",
        "bm25",
        "--no-rerank",
        "--top-n",
        "2",
        "--data-dir",
        data,
    )
    assert code == 0 and "第" in out and "1st" in out

    code, out = _run("collections", "list", "--json", "--data-dir", data)
    assert code == 0
    assert [(c["name"], c["points"], c["chunker"]["name"]) for c in json.loads(out)] == [
        ("laws", 79, "legal")
    ]
    assert _run("collections", "delete", "laws", "--data-dir", data) == (0, "deleted laws\n")
    code, out = _run("collections", "list", "--data-dir", data)
    assert code == 0 and "no collections" in out


def test_cli_errors(tmp_path, law_file):
    data = str(tmp_path / "qdrant")
    code, out = _run("search", "x", "--collection", "missing", "--data-dir", data)
    assert code == 2 and "collection 'missing' does not exist" in out
    code, out = _run("index", str(tmp_path / "nope"), "--collection", "c", "--data-dir", data)
    assert code == 2 and "no such file or folder" in out
    code, out = _run(
        "index",
        str(law_file),
        "--collection",
        "c",
        "--chunker",
        "legal",
        "--max-tokens",
        "10",
        "--data-dir",
        data,
    )
    assert code == 2 and "does not apply to legal" in out
    code, out = _run(
        "index", str(law_file), "--collection", "c", "--data-dir", data, "-q", stderr=True
    )
    assert code == 0 and "BM25 only" in out
    code, out = _run("search", "x", "--collection", "c", "--mode", "dense", "--data-dir", data)
    assert code == 2 and "needs --embedding-model" in out
    code, out = _run("search", "x", "--collection", "c", "--filter", "law", "--data-dir", data)
    assert code == 2 and "key=value" in out
