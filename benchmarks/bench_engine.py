"""Benchmark finerank against the official Qwen3-Reranker code (same inputs, dtype and run).

Same options as ``finerank bench`` (see ``--help``); for example::

    python benchmarks/bench_engine.py --quick --report bench-report
    python benchmarks/bench_engine.py --device cuda --dtypes bfloat16,float16 --report gpu-report
"""

from __future__ import annotations

import sys

from finerank.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]])
