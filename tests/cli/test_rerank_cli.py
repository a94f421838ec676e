"""``finerank rerank`` end to end (in-process typer runner)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from finerank.cli import app

runner = CliRunner()


def test_rerank_json_matches_python_api(qwen3_reranker_dir, qwen3_reranker, tmp_path):
    docs_file = tmp_path / "docs.jsonl"
    docs = ["网络安全法第六十三条 罚款", "hello world", ""]
    docs_file.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)))
    result = runner.invoke(
        app,
        [
            "rerank",
            "--model",
            str(qwen3_reranker_dir),
            "--query",
            "罚款",
            "--docs-file",
            str(docs_file),
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    expected = qwen3_reranker.rerank("罚款", docs)
    assert [row["index"] for row in payload] == [r.index for r in expected]
    assert [row["rank"] for row in payload] == [1, 2, 3]
    for row, r in zip(payload, expected, strict=True):
        assert abs(row["score"] - r.score) <= 1e-6
        assert row["document"] == docs[r.index]


def test_rerank_table_with_plain_lines_and_top_n(qwen3_reranker_dir, tmp_path):
    docs_file = tmp_path / "docs.txt"
    docs_file.write_text("first line\n\nsecond line\nthird line\n")
    result = runner.invoke(
        app,
        [
            "rerank",
            "-m",
            str(qwen3_reranker_dir),
            "-q",
            "line",
            "-f",
            str(docs_file),
            "--doc",
            "extra",
            "--top-n",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 documents" in result.stdout
    assert sum(line.startswith("│") for line in result.stdout.splitlines()) == 2


def test_rerank_errors_are_one_line(qwen3_reranker_dir, tmp_path):
    result = runner.invoke(app, ["rerank", "-m", str(tmp_path / "missing"), "-q", "q", "-d", "x"])
    assert result.exit_code == 2
    assert "model directory not found" in result.output
    result = runner.invoke(app, ["rerank", "-m", str(qwen3_reranker_dir), "-q", "q"])
    assert result.exit_code == 2 and "no documents" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n')
    args = ["rerank", "-m", str(qwen3_reranker_dir), "-q", "q", "-f", str(bad)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output


def test_one_shot_rerank_stays_eager_unless_compiling_is_forced(qwen3_reranker_dir, monkeypatch):
    import torch

    from finerank.models import fused

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(fn) or fn)
    # the tiny model counts as big: in bf16 its kernels compile under auto (servers)
    monkeypatch.setattr(fused, "COMPILE_MIN_HIDDEN", 64)
    monkeypatch.delenv(fused.COMPILE_ENV, raising=False)
    assert fused.compile_wanted(64, torch.device("cpu"), torch.bfloat16)
    args = ["rerank", "-m", str(qwen3_reranker_dir), "-q", "q", "-d", "a document", "--json"]
    args += ["--device", "cpu", "--dtype", "bfloat16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert compiled == []  # one request: eager
    monkeypatch.setenv(fused.COMPILE_ENV, "1")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(fn.__name__ for fn in compiled) == ["qk_norm_rope", "rms_norm"]
