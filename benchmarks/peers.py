"""finerank vs the other ways to run Qwen3-Reranker, on this machine: same model, same pairs.

Contenders (``finerank.bench.contenders``): finerank, the official model-card code,
sentence-transformers' ``CrossEncoder``, llama.cpp (llama-cpp-python, GGUF made by llama.cpp's
own converter) and Infinity (on a sequence-classification conversion). Each optional one is
skipped with a line saying what to install. The workload is the seed: one legal query +
instruction against the PRC Cybersecurity Law's articles. Rounds interleave dtypes and
contenders (the order flips every round), so load from other processes hits all alike;
tables show the median and the min-max over rounds.

    python benchmarks/peers.py                                  # 0.6B random weights, 50 pairs
    python benchmarks/peers.py --pairs 16 --layers 2 --rounds 3 # a quick look on a slow CPU
    python benchmarks/peers.py --model /models/Qwen3-Reranker-0.6B --dtypes bfloat16

``--layers K`` saves a copy of the model with its first K decoder layers (every contender then
loads the same smaller model: ratios hold, runs are 28/K times shorter). Results:
``--out DIR`` (default ``benchmarks/results/<date>-peers``): ``peers.json``, ``peers.md``
(the table), ``peers.png`` (pairs/s per contender and dtype, min-max bars).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finerank.bench.contenders import CONTENDERS, Unavailable, make_contender  # noqa: E402
from finerank.bench.measure import PeakMemory, _rss_bytes, kendall_tau  # noqa: E402
from finerank.bench.runner import (  # noqa: E402
    BenchConfig,
    default_data_dir,
    ensure_model,
    seed_workload,
)
from finerank.models.allocator import keep_buffers_in_heap, trim  # noqa: E402

#: llama.cpp's GGUF type per dtype (``--gguf`` adds others, e.g. q8_0)
GGUF_TYPES = {"float32": "f32", "bfloat16": "bf16"}


def keep_layers_copy(model_dir: Path, layers: int, cache: Path) -> Path:
    """A copy of ``model_dir`` with its first ``layers`` decoder layers (made once)."""
    target = cache / f"{model_dir.name}-{layers}-layers"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(partial)
    partial.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: random-weight 0.6B, cached)")
    parser.add_argument("--pairs", type=int, default=50, help="seed articles to score")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--gguf", default="", help="extra llama.cpp GGUF types, e.g. q8_0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=None, help="keep the first K layers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="reference / ST / Infinity")
    parser.add_argument("--data", type=Path, default=None, help="holds laws/articles.jsonl")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="result folders to merge (no run)"
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out or args.merge[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or REPO / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-peers"
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("FINERANK_BENCH_CACHE", Path.home() / ".cache" / "finerank"))
    model_dir = Path(args.model) if args.model else ensure_model(BenchConfig())[0]
    if args.layers:
        model_dir = keep_layers_copy(model_dir, args.layers, cache / "peers")
    query, instruction, _, docs = seed_workload(args.data or default_data_dir(), args.pairs)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}: choose from {', '.join(CONTENDERS)}")
    load_average = [os.getloadavg()]
    # every contender runs in this one process, so under the same malloc settings: set them
    # before the first load, not when finerank's loads
    allocator = keep_buffers_in_heap()

    # (contender, precision label) -> loaded contender; llama.cpp gets one per GGUF type
    loaded: dict[tuple[str, str], object] = {}
    skipped: list[str] = []
    load_rss: dict[str, float] = {}
    for dtype in dtypes:
        for name in names:
            variants = [None]
            if name == "llama.cpp":
                variants = [GGUF_TYPES.get(dtype)] if dtype in GGUF_TYPES else []
                if dtype == dtypes[0]:
                    variants += [g for g in args.gguf.split(",") if g]
            for gguf in variants:
                label = gguf.upper() if gguf else dtype
                trim()  # not the free memory the last contender's warm-up left in the heap
                before = _rss_bytes()
                try:
                    contender = make_contender(
                        name,
                        model_dir,
                        device="cpu",
                        dtype=dtype,
                        max_length=8192,
                        cache=cache / "peers",
                        instruction=instruction,
                        batch_size=args.batch_size,
                        gguf_type=gguf,
                    )
                except Unavailable as exc:
                    if not any(line.startswith(f"{name} ") for line in skipped):
                        skipped.append(f"{name} skipped: {exc}")
                        print(skipped[-1], flush=True)
                    continue
                contender.score(query, docs[:2], instruction)  # warm-up
                load_rss[f"{name}/{label}"] = (_rss_bytes() - before) / 2**20
                loaded[(name, label)] = contender
                print(f"loaded {name} ({label}) in {contender.load_seconds:.1f} s", flush=True)

    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in loaded}
    peak: dict[tuple[str, str], float] = {key: 0.0 for key in loaded}
    scores: dict[tuple[str, str], list[float]] = {}
    order = list(loaded)
    for round_number in range(args.rounds):
        for key in order:
            gc.collect()
            with PeakMemory(torch.device("cpu")) as mem:
                started = time.perf_counter()
                scores[key] = loaded[key].score(query, docs, instruction)
                took = time.perf_counter() - started
            seconds[key].append(took)
            peak[key] = max(peak[key], mem.delta_mb)
            print(f"round {round_number} {key[0]:22s} {key[1]:9s} {took:8.2f} s", flush=True)
        order.reverse()
        load_average.append(os.getloadavg())
    for contender in loaded.values():  # Infinity's threads would keep the process alive
        if contender.close is not None:
            contender.close()

    runs = {
        f"{name}/{label}": {
            "contender": name,
            "precision": label,
            "note": loaded[(name, label)].note,
            "pairs_per_s": [len(docs) / s for s in seconds[(name, label)]],
            "load_seconds": loaded[(name, label)].load_seconds,
            "load_rss_mb": load_rss[f"{name}/{label}"],
            "peak_rss_above_loaded_mb": peak[(name, label)],
            "scores": scores[(name, label)],
        }
        for name, label in loaded
    }
    result = {
        "model": str(model_dir),
        "layers": args.layers,
        "pairs": len(docs),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": load_average,
        "allocator": allocator,
        "rounds": args.rounds,
        "skipped": skipped,
        "runs": runs,
    }
    return write(result, out)


def merge(paths: list[Path], out: Path) -> int:
    """One table from several runs on the same model and pairs (e.g. Infinity from its own
    venv, fp32 and bf16 run apart): agreement is computed across them."""
    results = [json.loads((p / "peers.json").read_text(encoding="utf-8")) for p in paths]
    first = results[0]
    for other in results[1:]:
        if (other["model"], other["pairs"], other["layers"]) != (
            first["model"],
            first["pairs"],
            first["layers"],
        ):
            raise SystemExit(f"{other['model']} / {other['pairs']} pairs: not the same workload")
    merged = dict(first)
    merged["runs"] = {}
    merged["skipped"] = []
    merged["load_average"] = [x for r in results for x in r["load_average"]]
    merged["torch"] = ", ".join(sorted({r["torch"] for r in results}))
    merged["allocator"] = "; ".join(sorted({r.get("allocator", "not recorded") for r in results}))
    for r in results:
        merged["runs"].update(r["runs"])
    ran = {run["contender"] for run in merged["runs"].values()}
    for r in results:
        merged["skipped"] += [
            line
            for line in r["skipped"]
            if line.split()[0] not in ran and line not in merged["skipped"]
        ]
    merged["merged_from"] = [str(p) for p in paths]
    return write(merged, out)


def rows(result: dict) -> list[dict]:
    """Table rows: pairs/s and agreement with the reference code (same dtype and fp32; without
    the reference, fp32 agreement is against finerank fp32, equal to it within 1e-6)."""
    runs = result["runs"]
    baseline = "reference" if "reference/float32" in runs else "finerank"
    fp32 = runs.get(f"{baseline}/float32", {}).get("scores")
    out = []
    for key, run in runs.items():
        row = {k: v for k, v in run.items() if k != "scores"}
        row["median_pairs_per_s"] = statistics.median(run["pairs_per_s"])
        same = runs.get(f"reference/{_gguf_dtype(run['precision'])}")
        if same is not None and run["contender"] != "reference":
            row["max_abs_diff_vs_reference"] = _max_diff(run["scores"], same["scores"])
        if fp32 is not None and key != f"{baseline}/float32":
            row["max_abs_diff_vs_reference_fp32"] = _max_diff(run["scores"], fp32)
            row["kendall_tau_vs_reference_fp32"] = kendall_tau(fp32, run["scores"])
        out.append(row)
    return out


def write(result: dict, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    result["rows"] = rows(result)
    result["agreement_baseline"] = (
        "reference" if "reference/float32" in result["runs"] else "finerank"
    )
    (out / "peers.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    table = markdown(result)
    (out / "peers.md").write_text(table, encoding="utf-8")
    plot(result, out / "peers.png")
    print("\n" + table)
    print(f"results in {out}")
    return 0


def _gguf_dtype(label: str) -> str:
    """The torch dtype a precision label compares with (GGUF types: F32, BF16; Q8_0 -> fp32)."""
    if label in ("float32", "bfloat16", "float16"):
        return label
    return {"BF16": "bfloat16"}.get(label, "float32")


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def markdown(result: dict) -> str:
    """The table of ``result`` (what ``peers.md`` holds)."""
    loads = result["load_average"]
    lines = [
        f"Model {result['model']} ({result['layers'] or 'all'} layers), {result['pairs']} pairs, "
        f"{result['threads']} threads, torch {result['torch']}, {result['rounds']} rounds; "
        f"load average {loads[0][0]:.1f} at start, {loads[-1][0]:.1f} at the end.",
    ]
    if "allocator" in result:
        lines.append(
            f"All contenders of a run share its process and malloc settings: {result['allocator']}."
        )
    if result.get("agreement_baseline", "reference") != "reference":
        lines.append(
            "The reference code was not in this run: agreement is against finerank fp32 "
            "(equal to the reference within 1e-6)."
        )
    lines += [
        "",
        "| contender | precision | pairs/s median (min-max) | vs finerank | max diff vs reference "
        "(same dtype / fp32) | Kendall tau vs reference fp32 | load RSS MB | peak RSS above "
        "loaded MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ours = {
        r["precision"]: r["median_pairs_per_s"]
        for r in result["rows"]
        if r["contender"] == "finerank"
    }
    for r in result["rows"]:
        rates = r["pairs_per_s"]
        base = ours.get(_gguf_dtype(r["precision"]))
        relative = f"{r['median_pairs_per_s'] / base:.2f}x" if base else "-"
        same = r.get("max_abs_diff_vs_reference")
        fp32 = r.get("max_abs_diff_vs_reference_fp32")
        tau = r.get("kendall_tau_vs_reference_fp32")
        lines.append(
            f"| {r['contender']} | {r['precision']} | {r['median_pairs_per_s']:.3f} "
            f"({min(rates):.3f}-{max(rates):.3f}) | {relative} | "
            f"{_fmt(same)} / {_fmt(fp32)} | {_fmt(tau, '.3f')} | {r['load_rss_mb']:.0f} | "
            f"{r['peak_rss_above_loaded_mb']:.0f} |"
        )
    lines += [""] + [f"- {line}" for line in result["skipped"]]
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str = ".1e") -> str:
    return "-" if value is None else format(value, spec)


def plot(result: dict, path: Path) -> None:
    """Bar chart: median pairs/s per contender and precision, min-max as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    # "sentence-transformers" on two lines, so neighbouring labels do not overlap
    labels = [r["contender"].replace("-", "-\n", 1) + "\n" + r["precision"] for r in rows]
    medians = [r["median_pairs_per_s"] for r in rows]
    low = [m - min(r["pairs_per_s"]) for m, r in zip(medians, rows, strict=True)]
    high = [max(r["pairs_per_s"]) - m for m, r in zip(medians, rows, strict=True)]
    colors = ["tab:green" if r["contender"] == "finerank" else "tab:gray" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    ax.bar(range(len(rows)), medians, yerr=[low, high], color=colors, capsize=4)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("pairs/s (median, min-max)")
    ax.set_title(
        f"Qwen3-Reranker ({result['layers'] or 'all'} layers), {result['pairs']} pairs, "
        f"{result['threads']} threads"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
