"""How close finerank comes to this CPU's matmul ceiling, per dtype and request size.

For every round, request size (pairs) and dtype it times a plain matmul in that dtype (the
ceiling: the best of a 1024^3 and a 2048^3 product, on the same threads) right before and
right after one finerank request, and divides the GFLOP/s finerank achieved (the FLOPs it
really computes: linear layers of every computed token, a shared prefix once, plus causal
attention) by the mean of the two ceilings. Rounds interleave dtypes and sizes, so load from
other processes hits all of them alike; the median over rounds is the number to read.

    python benchmarks/cpu_fraction.py                      # 16, 50, 200 pairs; fp32 and bf16
    python benchmarks/cpu_fraction.py --pairs 50 --rounds 5 --layers 4 --profile

``--variants`` A/B-tests the CPU fast path's parts in the same rounds: ``eager`` (no row
padding, no compiled kernels: the path before them), ``pad`` (rows padded to a multiple of 16
only), ``compile`` (compiled q/k norm + RoPE and RMSNorm only), ``pad+compile``, ``default``
(what finerank runs: both). ``--layers K`` keeps the first K
decoder layers (every layer has the same shapes, so the fraction is the same; runs are 28/K
times shorter). ``--profile`` adds a per-category time breakdown (matmul, attention, norms,
RoPE, activation, gathers, conversions) of one request per dtype. The workload is the seed
query + instruction against PRC law articles (Cybersecurity Law first). Results: printed
table and ``--out FILE`` (JSON).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from finerank import Reranker
from finerank.bench.measure import decoder_flops, matmul_ceiling, pack_segments
from finerank.bench.runner import (
    SEED_INSTRUCTION,
    SEED_QUERY,
    BenchConfig,
    default_data_dir,
    ensure_model,
)
from finerank.models.allocator import keep_buffers_in_heap
from finerank.models.attention import CPU_ROW_MULTIPLE

# profiler op names -> where the time goes
CATEGORIES = {
    "matmul": (
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::linear",
        "aten::matmul",
        "mkldnn::_linear_pointwise",
    ),
    "compiled elementwise (q/k norm + RoPE, RMSNorm)": ("cpp_fused", "Compiled", "inductor"),
    "attention": ("flash_attention", "scaled_dot_product", "_efficient_attention", "softmax"),
    "gather/scatter": ("index_select", "index_copy", "index_put", "gather", "scatter"),
    "norm (RMSNorm)": ("pow", "rsqrt", "mean", "sum", "rms_norm", "div"),
    "activation": ("silu",),
    "elementwise (RoPE, residual, mul)": ("aten::mul", "aten::add", "aten::neg", "aten::cat"),
    "conversion/copy": ("aten::copy_", "aten::_to_copy", "aten::clone", "contiguous"),
    "masks": ("aten::where", "tril", "aten::ones", "aten::fill_"),
}


def law_articles(data_dir: Path, count: int) -> list[str]:
    """``count`` articles of ``laws/articles.jsonl``, Cybersecurity Law 2016 first."""
    records = [
        json.loads(line)
        for line in (data_dir / "laws" / "articles.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    records.sort(key=lambda r: not str(r.get("id", "")).startswith("CSL2016-"))
    if count > len(records):
        raise SystemExit(f"only {len(records)} articles in {data_dir}/laws/articles.jsonl")
    return [r["text"] for r in records[:count]]


def keep_layers(reranker: Reranker, layers: int) -> None:
    model = reranker.backend.decoder_model
    if layers < len(model.layers):
        model.layers = model.layers[:layers]
        model.config.num_hidden_layers = layers
        # decoders that pre-built per-layer state (fused weights) rebuild it
        reset = getattr(reranker.backend.decoder, "reset", None)
        if reset is not None:
            reset()


def workload(args) -> tuple[list[int], list[str], Path, list[str]]:
    """(request sizes, dtypes, model directory, articles) from the common arguments (``--pairs``,
    ``--dtypes``, ``--model``, ``--data``); sets ``--threads``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(x) for x in args.pairs.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    model_dir = Path(args.model) if args.model else ensure_model(BenchConfig())[0]
    return sizes, dtypes, model_dir, law_articles(args.data or default_data_dir(), max(sizes))


#: --variants: (row multiple, compiled kernels) of the decoder; None keeps finerank's default
VARIANTS = {
    "default": (None, None),
    "eager": (1, False),
    "pad": (CPU_ROW_MULTIPLE, False),
    "compile": (1, True),
    "pad+compile": (CPU_ROW_MULTIPLE, True),
}


def apply_variant(reranker: Reranker, variant: str, defaults: tuple[int, bool]) -> None:
    """Set the decoder's row padding and compiled kernels to ``variant`` (see VARIANTS)."""
    decoder = reranker.backend.decoder
    rows, compiled = VARIANTS[variant]
    decoder.row_multiple = defaults[0] if rows is None else rows
    decoder.kernels.enabled = defaults[1] if compiled is None else compiled


def request_flops(reranker: Reranker, docs: list[str]) -> float:
    engine = reranker.engine
    items = engine.prepare(SEED_QUERY, docs, instruction=SEED_INSTRUCTION).items
    config = reranker.backend.decoder_model.config
    return decoder_flops(config, pack_segments(engine.plan(items)))["total"]


def categorize(name: str) -> str:
    for category, needles in CATEGORIES.items():
        if any(needle in name for needle in needles):
            return category
    return "other"


def profile(reranker: Reranker, docs: list[str]) -> dict[str, float]:
    """Seconds per category of one request (self time of the ops, wall clock)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        reranker.rerank(SEED_QUERY, docs, instruction=SEED_INSTRUCTION)
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[categorize(event.key)] += event.self_cpu_time_total / 1e6
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: random-weight 0.6B, cached)")
    parser.add_argument("--pairs", default="16,50,200", help="request sizes (documents)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=None, help="keep the first K layers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--data", type=Path, default=None, help="holds laws/articles.jsonl")
    parser.add_argument("--profile", action="store_true", help="per-category time breakdown")
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="process: CPU time of this process for ceiling and run alike (steadier on a "
        "machine shared with other jobs; threads waiting for a core do not count)",
    )
    parser.add_argument(
        "--variants",
        default="default",
        help=f"comma-separated, interleaved in every round: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    sizes, dtypes, model_dir, docs = workload(args)
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    load_before = os.getloadavg()
    rerankers = {}
    defaults = {}
    for dtype in dtypes:
        rerankers[dtype] = Reranker.from_pretrained(model_dir, device="cpu", dtype=dtype)
        decoder = rerankers[dtype].backend.decoder
        defaults[dtype] = (decoder.row_multiple, decoder.kernels.enabled)
        if args.layers:
            keep_layers(rerankers[dtype], args.layers)
        for variant in variants:  # warm-up (and compiling, where a variant compiles)
            apply_variant(rerankers[dtype], variant, defaults[dtype])
            rerankers[dtype].rerank(SEED_QUERY, docs[:4], instruction=SEED_INSTRUCTION)
    flops = {n: request_flops(rerankers[dtypes[0]], docs[:n]) for n in sizes}
    torch_dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}

    clock = time.process_time if args.clock == "process" else time.perf_counter
    samples: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for round_number in range(args.rounds):
        for n, dtype, variant in itertools.product(sizes, dtypes, variants):
            apply_variant(rerankers[dtype], variant, defaults[dtype])
            before = matmul_ceiling(torch_dtypes[dtype], clock=clock)
            started = clock()
            rerankers[dtype].rerank(SEED_QUERY, docs[:n], instruction=SEED_INSTRUCTION)
            seconds = clock() - started
            after = matmul_ceiling(torch_dtypes[dtype], clock=clock)
            achieved = flops[n] / seconds / 1e9
            ceiling = (before + after) / 2
            sample = {
                "round": round_number,
                "seconds": seconds,
                "pairs_per_s": n / seconds,
                "gflop_per_s": achieved,
                "ceiling_gflop_per_s": ceiling,
                "fraction": achieved / ceiling,
                "load_average": os.getloadavg()[0],
            }
            samples[(variant, dtype, n)].append(sample)
            print(
                f"round {round_number} {variant:8s} {dtype:8s} {n:4d} pairs: {seconds:7.2f} s, "
                f"{achieved:6.1f} GFLOP/s, ceiling {ceiling:6.1f} "
                f"-> {achieved / ceiling:.3f} (load {sample['load_average']:.1f})",
                flush=True,
            )
    for dtype in dtypes:  # back to what finerank runs, for the profile
        apply_variant(rerankers[dtype], "default", defaults[dtype])
    breakdown = {}
    if args.profile:
        n = sizes[len(sizes) // 2]
        for dtype in dtypes:
            breakdown[dtype] = profile(rerankers[dtype], docs[:n])

    summary = []
    for (variant, dtype, n), rows in samples.items():
        fractions = [r["fraction"] for r in rows]
        summary.append(
            {
                "variant": variant,
                "dtype": dtype,
                "pairs": n,
                "gflop": round(flops[n] / 1e9, 1),
                "median_fraction": round(statistics.median(fractions), 3),
                "min_fraction": round(min(fractions), 3),
                "max_fraction": round(max(fractions), 3),
                "median_pairs_per_s": round(statistics.median(r["pairs_per_s"] for r in rows), 3),
                "median_ceiling": round(
                    statistics.median(r["ceiling_gflop_per_s"] for r in rows), 1
                ),
            }
        )
    load_after = os.getloadavg()
    print()
    threads = torch.get_num_threads()
    print(f"load average before {load_before}, after {load_after}; threads {threads}")
    print(keep_buffers_in_heap())
    print(
        "| variant | dtype | pairs | GFLOP | fraction of ceiling (median, min-max) | pairs/s "
        "| ceiling GFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in summary:
        print(
            f"| {row['variant']} | {row['dtype']} | {row['pairs']} | {row['gflop']} | "
            f"{row['median_fraction']} "
            f"({row['min_fraction']}-{row['max_fraction']}) | {row['median_pairs_per_s']} | "
            f"{row['median_ceiling']} |"
        )
    for dtype, totals in breakdown.items():
        whole = sum(totals.values())
        parts = ", ".join(f"{k} {v / whole:.0%}" for k, v in totals.items() if v / whole >= 0.01)
        print(f"profile {dtype} ({sizes[len(sizes) // 2]} pairs): {parts}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "model": str(model_dir),
                    "layers": args.layers,
                    "clock": args.clock,
                    "threads": torch.get_num_threads(),
                    "allocator": keep_buffers_in_heap(),
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                    "summary": summary,
                    "samples": {f"{v}/{d}/{n}": rows for (v, d, n), rows in samples.items()},
                    "profile": breakdown,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
