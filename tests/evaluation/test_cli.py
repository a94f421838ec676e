from __future__ import annotations

import json
import shutil
import sys

from typer.testing import CliRunner

from finerank.cli import app
from finerank.evaluation import METRICS

runner = CliRunner()


def test_eval_writes_json_markdown_and_plot(small_beir, qwen3_reranker_dir, tmp_path):
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
    # the default modes without an embedding model: bm25 and bm25+prf, each reranked
    assert [run["settings"]["first_stage"] for run in written["runs"]] == ["bm25", "bm25+prf"]
    assert [(row["mode"], row["stage"]) for row in written["table"]] == [
        ("bm25", "first stage"),
        ("bm25", "reranked"),
        ("bm25+prf", "first stage"),
        ("bm25+prf", "reranked"),
    ]
    run = written["runs"][0]
    assert run["dataset"] == small_beir.name and run["split"] == "test" and run["queries"] == 3
    assert set(run["first_stage"]) == set(METRICS) == set(run["reranked"])
    assert [row["query_id"] for row in run["per_query"]] == ["q1", "q2", "q3"]
    # the slipstream query finds its best document first with BM25
    assert run["per_query"][0]["first_stage_top"][0] == "d1"
    assert written["table"][1]["ndcg@10"] == run["reranked"]["ndcg@10"]
    # one index for both modes: its time is on the first run only
    assert "index" in run["seconds"] and "index" not in written["runs"][1]["seconds"]
    markdown = (out / "eval.md").read_text(encoding="utf-8")
    assert "| dataset | mode | stage | NDCG@10 | MRR@10 | R@10 | R@100 | MAP |" in markdown
    ndcg = run["first_stage"]["ndcg@10"]
    assert f"| bm25 | first stage | {ndcg:.4f} |" in markdown
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_table_has_every_dataset_and_mode(small_beir, tmp_path):
    other = tmp_path / "other-beir"
    shutil.copytree(small_beir, other)
    result = runner.invoke(
        app,
        ["eval", "--dataset", str(small_beir), "--dataset", str(other), "--first-stage", "bm25"],
    )
    assert result.exit_code == 0, result.output
    assert "reranked" not in result.stdout and "rerank " not in result.stdout
    lines = [line for line in result.stdout.splitlines() if " bm25 " in line]
    assert len(lines) == 2 and "other-be" in lines[1]
    assert all(line.count("│") == 9 for line in lines)  # 8 columns, one row each
    payload = json.loads(
        runner.invoke(
            app,
            [
                "eval",
                "--dataset",
                str(small_beir),
                "--json",
                "--max-queries",
                "2",
                "--first-stage",
                "bm25,bm25+prf",
                "--first-stage",
                "bm25",
            ],
        ).stdout
    )
    assert [run["queries"] for run in payload["runs"]] == [2, 2]
    assert payload["settings"]["modes"] == ["bm25", "bm25+prf"]
    assert all("reranked" not in run for run in payload["runs"])


def test_eval_errors_are_one_line(small_beir, tmp_path):
    missing = runner.invoke(app, ["eval", "--dataset", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "dataset directory not found" in missing.output
    assert "shipped dataset: stard" in missing.output
    split = runner.invoke(app, ["eval", "--dataset", str(small_beir), "--split", "dev"])
    assert split.exit_code == 2 and "available splits: test" in split.output
    mode = runner.invoke(app, ["eval", "--dataset", str(small_beir), "--first-stage", "dense"])
    assert mode.exit_code == 2 and "--embedding-model" in mode.output
    unknown = runner.invoke(app, ["eval", "--dataset", str(small_beir), "--first-stage", "splade"])
    assert unknown.exit_code == 2 and "bm25+prf" in unknown.output


def test_eval_dense_first_stage_with_minilm(small_beir, minilm_model_dir):
    result = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            str(small_beir),
            "--embedding-model",
            str(minilm_model_dir),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    runs = {run["settings"]["first_stage"]: run for run in payload["runs"]}
    # with an embedding model, all five modes run on one index
    assert list(runs) == ["bm25", "bm25+prf", "dense", "hybrid", "hybrid+prf"]
    for mode in ("dense", "hybrid", "hybrid+prf"):
        tops = {row["query_id"]: row["first_stage_top"] for row in runs[mode]["per_query"]}
        assert tops["q1"][0] in {"d1", "d4"} and tops["q2"][0] == "d2" and tops["q3"][0] == "d6"


def test_without_the_retrieval_extra_eval_runs_plain_bm25(small_beir, monkeypatch):
    """An install with the eval extra only: bm25s BM25, the one default mode it can run."""
    monkeypatch.setitem(sys.modules, "finerank.retrieval.search", None)  # import fails
    result = runner.invoke(app, ["eval", "--dataset", str(small_beir), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["settings"]["modes"] == ["bm25"] and len(payload["runs"]) == 1
    assert payload["runs"][0]["first_stage"]["ndcg@10"] > 0
    prf = runner.invoke(app, ["eval", "--dataset", str(small_beir), "--first-stage", "bm25+prf"])
    assert prf.exit_code == 2 and "pip install 'finerank[retrieval]'" in prf.output


def test_help_shows_the_defaults():
    """Bracketed defaults survive rich's markup (an unescaped ``[dbsf]`` is eaten as a tag)."""
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for default in ("[every shipped one]", "[dbsf]", "[auto]", "[bm25, bm25+prf;"):
        assert default in text, default
