"""Turn a benchmark result into files: ``bench.json``, PNG plots and ``summary.md``.

Every number in the Markdown table is read from the JSON by :func:`summary_rows` and printed
with :func:`fmt`, so the two always agree (the tests parse the table back).

Example:
    >>> write_report(result, "bench-report")  # doctest: +SKIP
    {'json': PosixPath('bench-report/bench.json'), 'summary': ..., 'plots': [...]}
"""

from __future__ import annotations

import json
from pathlib import Path

PLOTS = (
    "throughput_vs_length.png",
    "throughput_vs_batch.png",
    "latency.png",
    "memory_vs_length.png",
)


def fmt(value: float | int | None, digits: int = 4) -> str:
    """How the summary prints a number (``n/a`` for missing).

    Example:
        >>> fmt(3.14159), fmt(None), fmt(12), fmt(2.5e-07)
        ('3.142', 'n/a', '12', '2.5e-07')
    """
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}g}"


def summary_rows(result: dict) -> list[tuple[str, str, float | int | None]]:
    """(metric, implementation, value) rows of the summary table, straight from the JSON."""
    rows: list[tuple[str, str, float | int | None]] = []
    dtype_info = result.get("dtype", {})
    for name in ("float32", "bfloat16"):
        key = f"matmul_gflops_{name}"
        if key in dtype_info:
            rows.append((f"plain matmul GFLOP/s (ceiling), {name}", "machine", dtype_info[key]))
    if "bf16_matmul_speedup" in dtype_info:
        rows.append(("bf16 / fp32 matmul speed", "machine", dtype_info["bf16_matmul_speedup"]))
    for impl, loads in result.get("load_seconds", {}).items():
        for dtype, seconds in loads.items():
            rows.append((f"model load time (s), {dtype}", impl, seconds))
    for dtype, seed in result.get("seed", {}).items():
        if not isinstance(seed, dict) or "finerank" not in seed:
            continue
        for impl in ("finerank", "reference"):
            if impl in seed:
                rows.append((f"seed pairs/s, {dtype}", impl, seed[impl]["pairs_per_s"]))
                rows.append((f"seed tokens/s, {dtype}", impl, seed[impl]["tokens_per_s"]))
                # above the loaded weights (both implementations are loaded side by side)
                rows.append(
                    (f"seed peak memory above weights (MB), {dtype}", impl, seed[impl]["delta_mb"])
                )
        if "fraction_of_ceiling" in seed["finerank"]:
            rows.append(
                (
                    f"seed fraction of the {dtype} matmul ceiling",
                    "finerank",
                    seed["finerank"]["fraction_of_ceiling"],
                )
            )
        if "ratio" in seed:
            rows.append((f"seed speed ratio vs reference, {dtype}", "finerank", seed["ratio"]))
            rows.append((f"seed max abs score diff, {dtype}", "finerank", seed["max_abs_diff"]))
    for key, value in result.get("agreement", {}).items():
        if isinstance(value, float | int):
            rows.append((key.replace("_", " "), "finerank", value))
    latency = result.get("latency", {})
    for impl in ("finerank", "reference"):
        if impl in latency:
            rows.append(("batch-1 latency p50 (ms)", impl, latency[impl]["p50_ms"]))
            rows.append(("batch-1 latency p99 (ms)", impl, latency[impl]["p99_ms"]))
    for row in result.get("length_sweep", []):
        rows.append(
            (f"tokens/s at {row['length']} tokens", "finerank", row["finerank"]["tokens_per_s"])
        )
        if "ratio" in row:
            rows.append((f"ratio vs reference at {row['length']} tokens", "finerank", row["ratio"]))
    memory = result.get("memory", {})
    for point in memory.get("points", []):
        rows.append(
            (
                f"peak memory above weights (MB), one {point['length']}-token doc",
                "finerank",
                point["delta_mb"],
            )
        )
    if "mb_per_token" in memory:
        rows.append(("memory growth (MB per token)", "finerank", memory["mb_per_token"]))
        rows.append(("memory linear fit r^2", "finerank", memory["linear_r2"]))
        rows.append(
            (
                "largest batch at 32K context (extrapolated)",
                "finerank",
                memory.get("largest_batch_32k"),
            )
        )
    return rows


def render_summary(result: dict) -> str:
    """The Markdown summary: environment lines, then one table."""
    env = result.get("environment", {})
    model = result.get("model", {})
    lines: list[str] = [
        "# finerank benchmark",
        "",
        f"- device: {env.get('device')} (torch {env.get('torch')}, {env.get('cpu_count')} CPUs, "
        f"{env.get('torch_threads')} threads, load average at start "
        f"{env.get('load_average_at_start')})",
        f"- model: {model.get('path')} ("
        + (f"random weights, size {model.get('size')}" if model.get("random_weights") else "given")
        + ")",
        f"- started: {env.get('started')}",
        f"- CUDA: {result.get('cuda', {}).get('reason') or result.get('cuda')}",
    ]
    dtype_info = result.get("dtype")
    if dtype_info:
        native = (
            f"native bf16 ({dtype_info.get('bf16_units')})"
            if dtype_info.get("native_bf16")
            else "no native bf16"
        )
        lines.append(
            f"- fastest dtype here: {dtype_info.get('fastest_dtype')} ({native}; plain matmul "
            f"bf16/fp32 = {fmt(dtype_info.get('bf16_matmul_speedup'))}, "
            f"{dtype_info.get('threads')} threads)"
        )
    lines += [f"- note: {note}" for note in result.get("notes", [])]
    lines += [f"- {reason}" for reason in result.get("skipped", {}).values()]
    if "elapsed_s" in result:
        lines.append(f"- elapsed: {result['elapsed_s']} s")
    lines += [
        "",
        "| metric | implementation | value |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {metric} | {impl} | {fmt(value)} |" for metric, impl, value in summary_rows(result)
    ]
    return "\n".join(lines) + "\n"


def parse_summary_table(text: str) -> list[tuple[str, str, str]]:
    """Rows of the summary table back from Markdown (what the tests compare to the JSON)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| metric", "| ---")):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def _measured_plots(result: dict) -> list[str]:
    """The plots whose phase has data (an unmeasured or skipped phase gets no plot)."""
    names = []
    if result.get("length_sweep"):
        names.append(PLOTS[0])
    if result.get("batch_sweep"):
        names.append(PLOTS[1])
    latency = result.get("latency", {})
    if any(impl in latency for impl in ("finerank", "reference")):
        names.append(PLOTS[2])
    if result.get("memory", {}).get("points"):
        names.append(PLOTS[3])
    return names


def write_plots(result: dict, out: Path) -> list[Path]:
    """The PNG plots of the phases that have data; stale plots of other phases are removed."""
    wanted = _measured_plots(result)
    for name in PLOTS:
        if name not in wanted:
            (out / name).unlink(missing_ok=True)
    if not wanted:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    sweeps = (
        (PLOTS[0], "length_sweep", "length", "document length (tokens)", "document length"),
        (PLOTS[1], "batch_sweep", "batch_size", "documents per request", "batch size"),
    )
    for name, phase, x_key, xlabel, title in sweeps:
        if name not in wanted:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        rows = result[phase]
        xs = [row[x_key] for row in rows]
        for impl in ("finerank", "reference"):
            ys = [row[impl]["tokens_per_s"] for row in rows if impl in row]
            if len(ys) == len(xs) and ys:
                ax.plot(xs, ys, marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_ylabel("tokens/s")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_title(f"Throughput vs {title}")
        save(fig, name)

    if PLOTS[2] in wanted:
        fig, ax = plt.subplots(figsize=(6, 4))
        latency = result["latency"]
        impls = [impl for impl in ("finerank", "reference") if impl in latency]
        for offset, impl in enumerate(impls):
            values = [latency[impl][f"p{q}_ms"] for q in (50, 90, 99)]
            ax.bar([i + offset * 0.4 for i in range(3)], values, width=0.4, label=impl)
        ax.set_xticks([0.2, 1.2, 2.2], ["p50", "p90", "p99"])
        ax.set_ylabel("ms")
        ax.set_title(f"Batch-1 latency ({latency.get('document_tokens', '?')}-token document)")
        ax.legend()
        save(fig, PLOTS[2])

    if PLOTS[3] in wanted:
        fig, ax = plt.subplots(figsize=(6, 4))
        points = result["memory"]["points"]
        ax.plot(
            [p["tokens"] for p in points],
            [p["delta_mb"] for p in points],
            marker="o",
            label="finerank (peak above loaded model)",
        )
        ax.legend()
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("MB")
        ax.set_title("Peak memory vs length")
        ax.grid(alpha=0.3)
        save(fig, PLOTS[3])
    return written


def write_report(result: dict, out_dir: str | Path) -> dict[str, object]:
    """Write ``bench.json``, the plots and ``summary.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    summary = out / "summary.md"
    summary.write_text(render_summary(result), encoding="utf-8")
    plots = write_plots(result, out)
    return {"json": json_path, "summary": summary, "plots": plots}
