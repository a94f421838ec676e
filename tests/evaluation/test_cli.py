from __future__ import annotations

import json

from typer.testing import CliRunner

from finerank.cli import app
from finerank.evaluation import METRICS

runner = CliRunner()


def test_eval_writes_json_and_markdown(small_beir, qwen3_reranker_dir, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            str(small_beir),
            "--model",
            str(qwen3_reranker_dir),
            "--device",
            "cpu",
            "--recall-k",
            "5",
            "--rerank-k",
            "3",
            "--output",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert printed == written
    assert written["dataset"] == small_beir.name and written["split"] == "test"
    assert written["queries"] == 3
    assert set(written["first_stage"]) == set(METRICS) == set(written["reranked"])
    assert [row["query_id"] for row in written["per_query"]] == ["q1", "q2", "q3"]
    # the slipstream query finds its best document first with BM25
    assert written["per_query"][0]["first_stage_top"][0] == "d1"
    markdown = (out / "eval.md").read_text(encoding="utf-8")
    assert "| metric | first stage | reranked | delta |" in markdown
    ndcg = written["first_stage"]["ndcg@10"]
    assert f"| ndcg@10 | {ndcg:.4f} |" in markdown


def test_eval_without_model_has_no_reranked_section(small_beir):
    result = runner.invoke(
        app, ["eval", "--dataset", str(small_beir), "--json", "--max-queries", "2"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert "reranked" not in payload and payload["queries"] == 2
    table = runner.invoke(app, ["eval", "--dataset", str(small_beir)])
    assert table.exit_code == 0 and "ndcg@10" in table.stdout and "reranked" not in table.stdout


def test_eval_errors_are_one_line(small_beir, tmp_path):
    missing = runner.invoke(app, ["eval", "--dataset", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "dataset directory not found" in missing.output
    split = runner.invoke(app, ["eval", "--dataset", str(small_beir), "--split", "dev"])
    assert split.exit_code == 2 and "available splits: test" in split.output
    mode = runner.invoke(app, ["eval", "--dataset", str(small_beir), "--first-stage", "dense"])
    assert mode.exit_code == 2 and "--embedding-model" in mode.output


def test_eval_dense_first_stage_with_minilm(small_beir, minilm_model_dir):
    result = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            str(small_beir),
            "--first-stage",
            "hybrid",
            "--embedding-model",
            str(minilm_model_dir),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["settings"]["first_stage"] == "hybrid"
    tops = {row["query_id"]: row["first_stage_top"] for row in payload["per_query"]}
    assert tops["q1"][0] in {"d1", "d4"} and tops["q2"][0] == "d2" and tops["q3"][0] == "d6"
