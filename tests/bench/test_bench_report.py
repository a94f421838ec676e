"""`finerank bench --report DIR` with the tiny model and a tiny sweep: files, and the
summary table's numbers equal the JSON's."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from finerank.bench.measure import kendall_tau, linear_fit, percentile
from finerank.bench.report import PLOTS, fmt, parse_summary_table, summary_rows
from finerank.cli import app


def _bench(model_dir, data_dir, out, *options: str):
    """``finerank bench`` on the tiny model, fp32 on CPU, three seed articles."""
    common = ["--model", str(model_dir), "--device", "cpu", "--dtypes", "float32"]
    common += ["--report", str(out), "--seed-docs", "3"]
    if data_dir is not None:  # else the articles shipped in the package
        common += ["--data", str(data_dir)]
    return CliRunner().invoke(app, ["bench", *common, *options])


@pytest.fixture(scope="module")
def report_dir(qwen3_reranker_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-report")
    result = _bench(
        qwen3_reranker_dir,
        None,
        out,
        *[
            "--lengths",
            "32,64",
            "--sweep-tokens",
            "32",
            "--batch-sizes",
            "1,2",
            "--batch-length",
            "32",
        ],
        *["--memory-lengths", "64,128", "--reference-batch-size", "2", "--no-int8"],
    )
    assert result.exit_code == 0, result.output
    assert "seed speed ratio vs reference, float32" in result.output
    (out / "output.txt").write_text(result.output, encoding="utf-8")
    return out


def test_progress_lines_and_no_repeated_warnings(report_dir):
    output = (report_dir / "output.txt").read_text(encoding="utf-8")
    steps = [line for line in output.splitlines() if line.startswith("[bench ")]
    # dtype, seed x2, length x2 x2, batch x2 x2, latency x2, memory x2
    assert len(steps) == 15, steps
    assert steps[0].startswith("[bench 1/15] dtype") and steps[-1].startswith("[bench 15/15]")
    warnings = [line for line in output.splitlines() if "Warning" in line or "warn(" in line]
    assert len(warnings) == len(set(warnings)), warnings
    assert not any("max_length" in line for line in warnings)
    assert "fastest dtype here:" in output


def test_budget_skips_phases_and_draws_no_empty_plot(qwen3_reranker_dir, shared_data, tmp_path):
    (tmp_path / "throughput_vs_length.png").write_bytes(b"stale plot of an earlier run")
    result = _bench(
        qwen3_reranker_dir,
        shared_data,
        tmp_path,
        *["--phases", "seed,length_sweep,latency", "--no-reference", "--time-budget", "1"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert data["seed"]["float32"]["pairs"] >= 2  # the seed always runs
    assert "latency" in data["skipped"] and "length_sweep" not in data
    assert "latency skipped: estimated" in result.output
    assert not list(tmp_path.glob("*.png"))  # neither the skipped phases nor the stale plot
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "latency skipped" in summary


def test_report_files_exist(report_dir):
    assert (report_dir / "bench.json").is_file()
    assert (report_dir / "summary.md").is_file()
    for name in PLOTS:
        data = (report_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_summary_numbers_match_json(report_dir):
    result = json.loads((report_dir / "bench.json").read_text(encoding="utf-8"))
    table = parse_summary_table((report_dir / "summary.md").read_text(encoding="utf-8"))
    expected = summary_rows(result)
    assert [(m, i) for m, i, _ in table] == [(m, i) for m, i, _ in expected]
    for (metric, _, cell), (_, _, value) in zip(table, expected, strict=True):
        assert cell == fmt(value), metric
        if value is not None:
            assert math.isclose(float(cell), value, rel_tol=1e-3, abs_tol=1e-12), metric
    metrics = {m for m, _, _ in table}
    for needed in (
        "model load time (s), float32",
        "batch-1 latency p50 (ms)",
        "seed tokens/s, float32",
        "seed speed ratio vs reference, float32",
        "seed peak memory above weights (MB), float32",
        "largest batch at 32K context (extrapolated)",
    ):
        assert needed in metrics


def test_json_content_is_consistent(report_dir):
    result = json.loads((report_dir / "bench.json").read_text(encoding="utf-8"))
    seed = result["seed"]["float32"]
    assert seed["pairs"] == 3 and seed["max_abs_diff"] <= 1e-5  # finerank == reference, fp32
    assert seed["ratio"] == pytest.approx(
        seed["finerank"]["pairs_per_s"] / seed["reference"]["pairs_per_s"], rel=1e-2
    )
    assert [row["length"] for row in result["length_sweep"]] == [32, 64]
    assert [row["batch_size"] for row in result["batch_sweep"]] == [1, 2]
    assert [p["length"] for p in result["memory"]["points"]] == [64, 128]
    assert result["cuda"]["measured"] is False
    assert result["seed"]["ids"][0].startswith("CSL2016-")


def test_bad_options_are_clear_errors(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--lengths", "12,abc", "--report", str(tmp_path)])
    assert result.exit_code == 2 and "--lengths" in result.output
    result = CliRunner().invoke(app, ["bench", "--phases", "seed,warp", "--report", str(tmp_path)])
    assert result.exit_code == 2 and "warp" in result.output


def test_measure_helpers():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 1, 2], [1, 1, 2]) == 1.0
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(range(101)), 90) == 90
    slope, intercept, r2 = linear_fit([1, 2, 3, 4], [2.1, 3.9, 6.0, 8.1])
    assert slope == pytest.approx(2.0, abs=0.1) and r2 > 0.99
