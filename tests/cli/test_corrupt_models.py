"""Corrupt model files (issue 11.7): every command that loads a model says so in one line and
exits 2, never a traceback; the message names the model and says to copy it again."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finerank.cli import app

runner = CliRunner()


def _damage(source: Path, target: Path, how: str) -> Path:
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    if how == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        weights.write_bytes(bytes(range(256)) * 4)
    elif how == "tokenizer":
        (target / "tokenizer.json").write_text('{"version": "1.0", "model": 5', encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def broken(tmp_path_factory, qwen3_reranker_dir, qwen3_embedding_dir):
    root = tmp_path_factory.mktemp("broken-models")
    models = {
        how: _damage(qwen3_reranker_dir, root / how, how)
        for how in ("truncated", "garbage", "tokenizer")
    }
    models["embedding"] = _damage(qwen3_embedding_dir, root / "embedding", "truncated")
    docs = root / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("第一条 网络安全。\n", encoding="utf-8")
    models["docs"] = docs
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    with gzip.open(beir / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "d1", "title": "", "text": "network security"}) + "\n")
    with gzip.open(beir / "queries.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "q1", "text": "security"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    models["beir"] = beir
    data_dir = root / "qdrant"
    built = runner.invoke(app, ["index", str(docs), "-c", "laws", "--data-dir", str(data_dir)])
    assert built.exit_code == 0, built.output
    models["data_dir"] = data_dir
    return models


def _assert_one_line_exit_2(result, model: Path) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"from {model}" in errors[0] and "corrupt or incomplete" in errors[0]


@pytest.mark.parametrize("how", ["truncated", "garbage", "tokenizer"])
def test_rerank_with_a_corrupt_model(broken, how):
    result = runner.invoke(app, ["rerank", "-m", str(broken[how]), "-q", "q", "-d", "a"])
    _assert_one_line_exit_2(result, broken[how])


def test_every_command_that_loads_a_model(broken, monkeypatch):
    for name in [n for n in os.environ if n.startswith("FINERANK_")]:
        monkeypatch.delenv(name)
    bad, embedding = broken["truncated"], broken["embedding"]
    data_dir = str(broken["data_dir"])
    commands = {
        "search": (["search", "q", "-c", "laws", "-m", str(bad), "--data-dir", data_dir], bad),
        "index": (
            ["index", str(broken["docs"]), "-c", "e", "--embedding-model", str(embedding)]
            + ["--data-dir", data_dir],
            embedding,
        ),
        "eval": (["eval", "--dataset", str(broken["beir"]), "-m", str(bad)], bad),
        "serve": (["serve", "-m", str(bad), "--port", "0"], bad),
        "ui": (["ui", "-m", str(bad), "--port", "0"], bad),
    }
    for name, (args, model) in commands.items():
        result = runner.invoke(app, args)
        assert "ready" not in result.output, (name, result.output)
        _assert_one_line_exit_2(result, model)
