"""``benchmarks/bench_retrieval.py`` keeps running: its smallest run, every phase and report."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO_ROOT


def test_retrieval_benchmark_runs_every_phase(shared_data, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_retrieval", REPO_ROOT / "benchmarks" / "bench_retrieval.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(
        ["--quick", "--sizes", "400", "--queries", "3", "--budget", "1", "--old-max", "400",
         "--data", str(shared_data), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    runs = {(r["store"], r["dim"]): r for r in results["runs"]}
    assert set(runs) == {("edge", None), ("edge", 64), ("local-mode", 64)}
    assert runs[("edge", None)]["ingest_bm25"]["chunks"] >= 400
    for key, run in runs.items():
        modes = run["query"]["modes"]
        assert set(modes) == ({"bm25", "bm25+filter"} if key[1] is None else set(bench.MODES))
        for row in modes.values():
            assert row["queries"] >= 1 and row["p50_ms"] > 0 and row["mean_hits"] > 0
        assert run["query"]["rss_mb"] > 0 and run["query"]["disk_mb"] > 0
    summary = (out / "summary.md").read_text()
    assert "| 400 | 64 | edge | hybrid |" in summary and "load average" in summary
    assert (out / "latency.png").stat().st_size > 0
