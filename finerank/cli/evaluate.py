"""``finerank eval``: first stage vs. reranked metrics on a BEIR-format dataset.

Flags override ``FINERANK_*`` settings (``FINERANK_MODEL`` is the reranker when ``--model``
is not given, as for ``finerank search``; ``--no-rerank`` measures the first stage alone); the
reranker and embedder come from :class:`~finerank.runtime.Runtime`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from finerank.cli.common import cli_settings, friendly_errors
from finerank.errors import InvalidInputError

FIRST_STAGES = ("bm25", "dense", "hybrid")


def register(app: typer.Typer) -> None:
    """Add ``finerank eval`` to the main app."""
    app.command("eval")(eval_command)


@friendly_errors
def eval_command(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="BEIR dir: corpus.jsonl, queries.jsonl, qrels/.")
    ],
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv to evaluate.")] = "test",
    first_stage: Annotated[str, typer.Option(help="bm25 | dense | hybrid")] = "bm25",
    recall_k: Annotated[int, typer.Option(min=1, help="Candidates from the first stage.")] = 100,
    rerank_k: Annotated[int, typer.Option(min=1, help="Top candidates reranked.")] = 100,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Reranker [FINERANK_MODEL; none: first stage only]."),
    ] = None,
    no_rerank: Annotated[
        bool, typer.Option("--no-rerank", help="First stage only (ignore FINERANK_MODEL).")
    ] = False,
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model for dense / hybrid.")
    ] = None,
    instruction: Annotated[str | None, typer.Option(help="Reranker instruction (Qwen3).")] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N queries.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Directory for eval.json and eval.md.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_length: Annotated[
        int | None, typer.Option(min=16, help="Reranker tokens per pair [8192].")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda [auto]")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto | float32 | bfloat16 | float16 [auto]")
    ] = None,
) -> None:
    """Evaluate the first stage and the reranked ranking (NDCG@10, MRR@10, Recall@10/100, MAP)."""
    from finerank.evaluation import evaluate_dataset, load_beir
    from finerank.evaluation.first_stage import make_first_stage
    from finerank.runtime import Runtime

    if first_stage not in FIRST_STAGES:
        raise InvalidInputError(f"--first-stage must be one of {', '.join(FIRST_STAGES)}")
    data = load_beir(dataset, split=split).head(max_queries)
    settings = cli_settings(
        model=model,
        embedding_model=embedding_model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        instruction=instruction,
    )
    runtime = Runtime(settings)
    embedder = runtime.embedder() if runtime.has("embedder") else None
    stage = make_first_stage(first_stage, embedder=embedder)
    reranker = runtime.reranker() if runtime.has("reranker") and not no_rerank else None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    err = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def show(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        report = evaluate_dataset(
            data,
            stage,
            reranker=reranker,
            recall_k=recall_k,
            rerank_k=rerank_k,
            instruction=settings.instruction,
            settings={
                "model": settings.model if reranker is not None else None,
                "embedding_model": settings.embedding_model,
            },
            progress=show,
        )
    if output is not None:
        json_path, md_path = report.write(output)
        err.print(f"wrote {json_path} and {md_path}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    _print_summary(report)


def _print_summary(report) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{report.dataset} / {report.split}: {report.queries} queries, "
        f"first stage {report.settings['first_stage']}"
    )
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("first stage", justify="right")
    if report.reranked is not None:
        table.add_column("reranked", justify="right")
        table.add_column("delta", justify="right")
    for metric, base, after, delta in report.summary_rows():
        cells = [metric, f"{base:.4f}"]
        if after is not None and delta is not None:
            colour = "green" if delta > 0 else "red" if delta < 0 else "white"
            cells += [f"{after:.4f}", f"[{colour}]{delta:+.4f}[/{colour}]"]
        table.add_row(*cells)
    Console().print(table)
