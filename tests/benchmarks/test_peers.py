"""``benchmarks/peers.py`` keeps running: a tiny-model run, a contender that is not installed
skipped with its line, and ``--merge`` of two runs."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO_ROOT


def _peers():
    spec = importlib.util.spec_from_file_location("peers", REPO_ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peers_runs_and_merges(qwen3_reranker_dir, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FINERANK_BENCH_CACHE", str(tmp_path / "cache"))
    peers = _peers()
    common = ["--model", str(qwen3_reranker_dir), "--pairs", "3", "--rounds", "1"]
    common += ["--data", str(shared_data)]
    assert peers.main([*common, "--out", str(tmp_path / "a"), "--dtypes", "float32",
                       "--contenders", "finerank,reference,infinity"]) == 0  # fmt: skip
    result = json.loads((tmp_path / "a" / "peers.json").read_text())
    rows = {(r["contender"], r["precision"]): r for r in result["rows"]}
    assert set(rows) == {("finerank", "float32"), ("reference", "float32")}
    assert rows[("finerank", "float32")]["max_abs_diff_vs_reference"] <= 1e-5
    assert rows[("finerank", "float32")]["kendall_tau_vs_reference_fp32"] == 1.0
    # Infinity needs sentence-transformers<4: never in finerank's environment, always a skip line
    assert any(line.startswith("infinity skipped: ") for line in result["skipped"])

    assert peers.main([*common, "--out", str(tmp_path / "b"), "--dtypes", "bfloat16",
                       "--contenders", "finerank"]) == 0  # fmt: skip
    assert peers.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"),
                       "--out", str(tmp_path / "m")]) == 0  # fmt: skip
    merged = json.loads((tmp_path / "m" / "peers.json").read_text())
    low = {(r["contender"], r["precision"]): r for r in merged["rows"]}[("finerank", "bfloat16")]
    assert low["max_abs_diff_vs_reference_fp32"] < 0.05  # against the other run's reference
    table = (tmp_path / "m" / "peers.md").read_text()
    assert "| finerank | bfloat16 |" in table and "| reference | float32 |" in table
    assert (tmp_path / "m" / "peers.png").stat().st_size > 0
