"""What compiling the CPU kernels (finerank.models.fused) costs on first use, and what it saves.

Runs two child processes on one fresh Inductor cache (``TORCHINDUCTOR_CACHE_DIR``): the first
compiles from nothing (cold), the second finds the first one's cache (warm, as a server's
second start does). Each loads the reranker with ``FINERANK_COMPILE=1``, times the warm-up
forward (:meth:`~finerank.engine.engine.ScoringEngine.warm_up`: compiling plus the first-use
check), then the cold child times one request of ``--docs`` law articles with the compiled
kernels and eager, interleaved for ``--rounds``. ``--layers K`` keeps K decoder layers: the
compile cost does not depend on it (one kernel serves every layer), the request times are
scaled to the full depth (x layers_total / K) in the printed saving.

    python benchmarks/compile_cost.py                       # bf16, 0.6B, 100 documents
    python benchmarks/compile_cost.py --dtype float32 --layers 28
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_fraction import keep_layers, law_articles  # noqa: E402

from finerank import Reranker  # noqa: E402
from finerank.bench.runner import (  # noqa: E402
    SEED_INSTRUCTION,
    SEED_QUERY,
    BenchConfig,
    default_data_dir,
    ensure_model,
)


def child(args) -> dict:
    model_dir = Path(args.model) if args.model else ensure_model(BenchConfig())[0]
    reranker = Reranker.from_pretrained(model_dir, device="cpu", dtype=args.dtype)
    layers_total = len(reranker.backend.decoder_model.layers)
    if args.layers:
        keep_layers(reranker, args.layers)
    layers = len(reranker.backend.decoder_model.layers)
    engine, kernels = reranker.engine, reranker.backend.decoder.kernels
    result = {"warm_up_s": engine.warm_up(), "compiled": kernels.compiled}
    if args.measure:
        docs = law_articles(args.data or default_data_dir(), args.docs)
        times: dict[str, list[float]] = {"compiled": [], "eager": []}
        for _ in range(args.rounds):
            for variant in times:
                kernels.enabled = variant == "compiled"
                started = time.perf_counter()
                reranker.rerank(SEED_QUERY, docs, instruction=SEED_INSTRUCTION)
                times[variant].append((time.perf_counter() - started) * layers_total / layers)
        result["request_s"] = {k: min(v) for k, v in times.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: random-weight 0.6B, cached)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4, help="keep the first K layers")
    parser.add_argument("--data", type=Path, default=None, help="holds laws/articles.jsonl")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    base = [sys.executable, __file__, "--child", "--dtype", args.dtype, "--docs", str(args.docs)]
    base += ["--rounds", str(args.rounds), "--layers", str(args.layers)]
    base += ["--model", args.model] if args.model else []
    base += ["--data", str(args.data)] if args.data else []
    results = {"load_before": os.getloadavg()[0], "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="finerank-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "FINERANK_COMPILE": "1"}
        for name, extra in (("cold", ["--measure"]), ("warm", [])):
            out = subprocess.run(base + extra, env=env, check=True, capture_output=True, text=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    results["load_after"] = os.getloadavg()[0]
    request = results["cold"]["request_s"]
    saved = request["eager"] - request["compiled"]
    print(json.dumps(results, indent=2))
    print(
        f"{args.dtype}: compile on first use {results['cold']['warm_up_s']:.1f} s cold cache, "
        f"{results['warm']['warm_up_s']:.1f} s warm cache; {args.docs} documents "
        f"{request['eager']:.1f} s eager -> {request['compiled']:.1f} s compiled "
        f"(saves {saved:.1f} s; load {results['load_before']:.1f} -> {results['load_after']:.1f})"
    )


if __name__ == "__main__":
    main()
