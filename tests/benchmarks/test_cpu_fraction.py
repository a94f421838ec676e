"""``benchmarks/cpu_fraction.py`` keeps running: a tiny-model run A/B-testing two variants of
the CPU fast path in the same rounds."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO_ROOT


def _cpu_fraction():
    path = REPO_ROOT / "benchmarks" / "cpu_fraction.py"
    spec = importlib.util.spec_from_file_location("cpu_fraction", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_run_interleaved(qwen3_reranker_dir, shared_data, tmp_path):
    bench = _cpu_fraction()
    out = tmp_path / "fraction.json"
    assert bench.main(["--model", str(qwen3_reranker_dir), "--data", str(shared_data),
                       "--pairs", "3", "--rounds", "1", "--dtypes", "float32",
                       "--variants", "eager,default", "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    rows = {(r["variant"], r["dtype"], r["pairs"]): r for r in result["summary"]}
    assert set(rows) == {("eager", "float32", 3), ("default", "float32", 3)}
    assert all(r["median_fraction"] > 0 and r["median_pairs_per_s"] > 0 for r in rows.values())
    with pytest.raises(SystemExit):
        bench.main(["--model", str(qwen3_reranker_dir), "--variants", "fastest"])
