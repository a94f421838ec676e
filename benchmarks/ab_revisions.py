"""A/B two revisions of finerank's engine in one process: pairs/s and score agreement.

The working tree's ``finerank`` is B; A is any git revision, imported under another package
name (``git archive`` of its ``finerank/`` into a temporary folder, imports renamed). Both
load the same model once per dtype and score the same pairs in interleaved rounds (A B B A
...), so load from other processes hits both alike; the ratio of medians is the number to
read.

    python benchmarks/ab_revisions.py --base main                  # main vs the working tree
    python benchmarks/ab_revisions.py --base e6de2af^ --pairs 16,50 --layers 4 --rounds 5

``--layers K`` keeps the first K decoder layers (all layers have the same shapes: the ratio
holds, runs are 28/K times shorter). The workload is the seed query + instruction against PRC
law articles (Cybersecurity Law first), as in ``benchmarks/cpu_fraction.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from io import BytesIO
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from cpu_fraction import keep_layers, workload  # noqa: E402

from finerank import Reranker  # noqa: E402
from finerank.bench.runner import SEED_INSTRUCTION, SEED_QUERY  # noqa: E402

_IMPORT = re.compile(r"(?<![\w/.-])finerank(?=[.\s,)\"'])")


def import_revision(revision: str, into: Path, name: str = "finerank_base"):
    """``finerank`` as of git ``revision``, importable as package ``name``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "finerank"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / name
    (into / "finerank").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(_IMPORT.sub(name, text), encoding="utf-8")
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git revision A (default: main)")
    parser.add_argument("--model", help="model directory (default: random-weight 0.6B, cached)")
    parser.add_argument("--pairs", default="50", help="request sizes (documents)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--layers", type=int, default=None, help="keep the first K layers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--data", type=Path, default=None, help="holds laws/articles.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    sizes, dtypes, model_dir, docs = workload(args)
    scratch = tempfile.TemporaryDirectory(prefix="finerank-ab-")
    base = import_revision(args.base, Path(scratch.name))
    variants = {"A": base.Reranker, "B": Reranker}
    load_before = os.getloadavg()
    rerankers = {}
    for dtype in dtypes:
        for label, cls in variants.items():
            reranker = cls.from_pretrained(model_dir, device="cpu", dtype=dtype)
            if args.layers:
                keep_layers(reranker, args.layers)
            reranker.rerank(SEED_QUERY, docs[:4], instruction=SEED_INSTRUCTION)  # warm-up
            rerankers[(label, dtype)] = reranker

    seconds: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    scores: dict[tuple[str, str, int], list[float]] = {}
    order = ["A", "B"]
    for round_number in range(args.rounds):
        for n in sizes:
            for dtype in dtypes:
                for label in order:
                    started = time.perf_counter()
                    results = rerankers[(label, dtype)].rerank(
                        SEED_QUERY, docs[:n], instruction=SEED_INSTRUCTION
                    )
                    took = time.perf_counter() - started
                    seconds[(label, dtype, n)].append(took)
                    scores[(label, dtype, n)] = [
                        r.score for r in sorted(results, key=lambda r: r.index)
                    ]
                    print(f"round {round_number} {label} {dtype:8s} {n:4d} pairs: {took:7.2f} s")
                order.reverse()
    load_after = os.getloadavg()
    print(f"\nA = {args.base}, B = working tree; load average {load_before} -> {load_after}")
    print("| dtype | pairs | A pairs/s (median, min-max) | B pairs/s | B/A | max abs score diff |")
    print("|---|---|---|---|---|---|")
    summary = []
    for n in sizes:
        for dtype in dtypes:
            rate = {label: [n / s for s in seconds[(label, dtype, n)]] for label in ("A", "B")}
            med = {label: statistics.median(values) for label, values in rate.items()}
            diff = max(
                abs(a - b)
                for a, b in zip(scores[("A", dtype, n)], scores[("B", dtype, n)], strict=True)
            )
            row = {
                "dtype": dtype,
                "pairs": n,
                "a_pairs_per_s": rate["A"],
                "b_pairs_per_s": rate["B"],
                "ratio": med["B"] / med["A"],
                "max_abs_diff": diff,
            }
            summary.append(row)
            print(
                f"| {dtype} | {n} | {med['A']:.3f} ({min(rate['A']):.3f}-{max(rate['A']):.3f}) "
                f"| {med['B']:.3f} ({min(rate['B']):.3f}-{max(rate['B']):.3f}) "
                f"| {row['ratio']:.2f}x | {diff:.1e} |"
            )
    if args.out:
        payload = {
            "base": args.base,
            "layers": args.layers,
            "threads": torch.get_num_threads(),
            "load_average": [load_before, load_after],
            "summary": summary,
        }
        args.out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
