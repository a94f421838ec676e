"""``benchmarks/bench_retrieval.py`` keeps running: its smallest run, every phase and report."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO_ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_retrieval", REPO_ROOT / "benchmarks" / "bench_retrieval.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_retrieval_benchmark_runs_every_phase(shared_data, tmp_path):
    bench = load_benchmark()
    out = bench.main(
        ["--quick", "--sizes", "400", "--queries", "3", "--budget", "1", "--old-max", "400",
         "--data", str(shared_data), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    runs = {(r["store"], r["dim"]): r for r in results["runs"]}
    assert set(runs) == {("edge", None), ("edge", 64), ("local-mode", 64)}
    assert runs[("edge", None)]["ingest_bm25"]["chunks"] >= 400
    breakdown = runs[("edge", None)]["breakdown"]
    assert breakdown["ingest"]["analysis_us"] > 0 and breakdown["query"]["search_ms"] > 0
    for key, run in runs.items():
        modes = run["query"]["modes"]
        expected = {"bm25", "bm25+filter"} if key[1] is None else set(bench.MODES)
        assert set(modes) == expected | ({bench.SERVICE_MODE} if key[0] == "edge" else set())
        for row in modes.values():
            assert row["queries"] >= 1 and row["p50_ms"] > 0 and row["mean_hits"] > 0
        assert run["query"]["rss_mb"] > 0 and run["query"]["disk_mb"] > 0
    summary = (out / "summary.md").read_text()
    assert "| 400 | 64 | edge | hybrid |" in summary and "load average" in summary
    assert "Where the time goes" in summary
    assert (out / "latency.png").stat().st_size > 0


def test_synthetic_articles_analyze_to_their_clauses_terms(shared_data):
    bench = load_benchmark()
    from finerank.retrieval.bm25 import analyze

    corpus = bench.Corpus(shared_data, 700)
    corpus.real = corpus.real[:200]  # 500 synthetic articles
    _, texts, _, terms_of = next(corpus.batches(700))
    synthetic = [(text, terms) for text, terms in zip(texts, terms_of, strict=True) if terms]
    assert len(synthetic) == 500
    assert all(analyze(text) == terms for text, terms in synthetic)
