"""``benchmarks/gpu_check.py`` keeps running: its CPU dry run (``--device cpu --size tiny``),
smallest form, writes every section of the JSON and the summary; a contender that fails to
load is recorded and the rest is still measured (exit code 1)."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO_ROOT


def test_gpu_check_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FINERANK_BENCH_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location(
        "gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py"
    )
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    out = tmp_path / "out"
    code = check.main(
        ["--device", "cpu", "--size", "tiny", "--out", str(out), "--skip-tests",
         "--lengths", "64", "--tokens-per-point", "192", "--rounds", "1",
         "--latency-lengths", "64", "--latency-samples", "2",
         "--contenders", "finerank,reference,sentence-transformers,no-such-contender"]
    )  # fmt: skip
    assert code == 1  # the unknown contender's load error; everything else ran
    result = json.loads((out / "gpu_check.json").read_text())
    assert list(result["errors"]) == ["load no-such-contender"]
    assert "unknown contender" in result["errors"]["load no-such-contender"]["error"]
    assert result["finerank_attention"]["path"] == "cpu"
    assert result["environment"]["packages"]["transformers"]
    assert result["model"]["size"] == "tiny" and result["model"]["random_weights"]
    assert result["ceiling"]["bf16_matmul_gflops"] > 0
    (row,) = result["throughput"]
    assert row["length"] == 64 and row["pairs"] == 3 and row["tokens"] > 3 * 64
    contenders = row["contenders"]
    assert {"finerank", "reference"} <= set(contenders)
    for name, entry in contenders.items():
        assert entry["tokens_per_s"] > 0 and entry["pairs_per_s"] > 0
        if name != "reference":  # same model, same pairs, fp32: the reference's scores
            assert entry["max_abs_diff_vs_reference"] <= 1e-5, name
    assert set(result["latency"]["64"]) == set(contenders)
    assert any("tests skipped" in line for line in result["skipped"])
    summary = (out / "summary.md").read_text()
    assert "| doc tokens | pairs | finerank | reference" in summary and "| 64 | 3 |" in summary
    assert "## Errors (the run went on)" in summary and "load no-such-contender" in summary
