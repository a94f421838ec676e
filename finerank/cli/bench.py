"""``finerank bench``: the official reference code vs finerank on the same inputs and machine."""

from __future__ import annotations

from pathlib import Path

import typer

from finerank.cli.common import friendly_errors
from finerank.errors import InvalidInputError


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInputError(f"{option} takes comma-separated integers, got {text!r}") from None
    if any(value < 1 for value in values):
        raise InvalidInputError(f"{option} values must be positive, got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the main app."""

    @app.command()
    @friendly_errors
    def bench(
        model: str = typer.Option(
            None,
            "--model",
            "-m",
            help="Model directory; default: a random-weight model of --size (built once, cached "
            "in ~/.cache/finerank or $FINERANK_BENCH_CACHE).",
        ),
        size: str = typer.Option(
            "0.6b",
            help="Random model size when --model is not given: "
            "0.6b (Qwen3-Reranker-0.6B architecture) or tiny.",
        ),
        device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
        dtypes: str = typer.Option(
            None,
            "--dtypes",
            help="Comma-separated; the first is used for the sweeps. float16 is CUDA only. "
            "Default: float32,bfloat16 (--quick on a CPU without native bf16: float32).",
        ),
        report: Path = typer.Option(
            Path("bench-report"),
            "--report",
            help="Directory for bench.json, summary.md and PNG plots.",
        ),
        quick: bool = typer.Option(
            False,
            "--quick",
            help="Small workloads within a 3-minute budget (2 CPU cores, 0.6B model): phases "
            "that would not fit are skipped and say so.",
        ),
        time_budget: float = typer.Option(
            None,
            "--time-budget",
            min=1,
            help="Seconds for the whole run; phases estimated to pass it are skipped "
            "(default: 180 with --quick, none otherwise).",
        ),
        data: Path = typer.Option(
            None,
            "--data",
            help="Data directory holding laws/articles.jsonl "
            "(default: $FINERANK_BENCH_DATA, else the Cybersecurity Law articles shipped in the "
            "package).",
        ),
        seed_docs: int = typer.Option(50, min=1, help="Articles in the seed workload."),
        lengths: str = typer.Option(
            "128,512,2048", help="Length sweep (tokens); add 8192 where time allows."
        ),
        sweep_tokens: int = typer.Option(
            4096, min=1, help="About this many tokens per length-sweep point."
        ),
        batch_sizes: str = typer.Option("1,4,16", help="Batch sweep (documents per request)."),
        batch_length: int = typer.Option(
            256, min=1, help="Document tokens in the batch/latency runs."
        ),
        memory_lengths: str = typer.Option(
            "512,1024,2048,4096",
            help="Document lengths (tokens) of the memory curve; add 8192,16384,32768 where time "
            "allows (slow on CPU with the 0.6B model).",
        ),
        phases: str = typer.Option(
            "dtype,seed,agreement,length_sweep,batch_sweep,latency,memory",
            help="Which phases to run (dtype: native bf16 and the matmul ceilings).",
        ),
        reference: bool = typer.Option(
            True, "--reference/--no-reference", help="Also time the official reference code."
        ),
        reference_batch_size: int = typer.Option(
            8,
            min=1,
            help="Reference batch size (capped so its full-vocabulary logits stay < 6 GiB).",
        ),
        int8: bool = typer.Option(
            True, "--int8/--no-int8", help="Measure int8 rank agreement (CPU)."
        ),
        max_batch_tokens: int = typer.Option(16384, min=1, help="finerank token budget."),
    ) -> None:
        """Benchmark finerank against the official Qwen3-Reranker code (same inputs, dtype, run).

        Prints pairs/s, tokens/s, the speed ratio, max score difference, peak memory, load
        time and which dtype is fastest here; writes bench.json, summary.md and a PNG plot per
        measured sweep to --report. Progress goes to stderr.
        """
        from finerank.bench.report import write_report
        from finerank.bench.runner import PHASES, BenchConfig, run_bench

        chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
        unknown = set(chosen) - set(PHASES)
        if unknown:
            raise InvalidInputError(f"unknown phases {sorted(unknown)}: choose from {list(PHASES)}")
        config = BenchConfig(
            model=model,
            size=size,
            device=device,
            dtypes=tuple(d.strip() for d in dtypes.split(",") if d.strip()) if dtypes else None,
            data_dir=str(data) if data else None,
            seed_docs=seed_docs,
            lengths=_ints(lengths, "--lengths"),
            sweep_tokens=sweep_tokens,
            batch_sizes=_ints(batch_sizes, "--batch-sizes"),
            batch_length=batch_length,
            memory_lengths=_ints(memory_lengths, "--memory-lengths"),
            max_batch_tokens=max_batch_tokens,
            reference=reference,
            reference_batch_size=reference_batch_size,
            int8=int8,
            quick=quick,
            time_budget_s=time_budget,
            phases=chosen,
        )

        def save(result: dict) -> None:
            # partial results survive an interrupted run
            write_report(result, report)

        result = run_bench(config, on_phase=save)
        files = write_report(result, report)
        typer.echo(files["summary"].read_text(encoding="utf-8"))
        typer.echo(
            f"wrote {files['json']}, {files['summary']} and {len(files['plots'])} plots in {report}"
        )
