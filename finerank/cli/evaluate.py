"""``finerank eval``: first stage vs. reranked metrics on a BEIR-format dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from finerank.cli.common import friendly_errors
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
        str | None, typer.Option("--model", "-m", help="Reranker (omit: first stage only).")
    ] = None,
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
    max_length: Annotated[int, typer.Option(min=16, help="Reranker tokens per pair.")] = 8192,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
) -> None:
    """Evaluate the first stage and the reranked ranking (NDCG@10, MRR@10, Recall@10/100, MAP)."""
    from finerank.evaluation import evaluate_dataset, load_beir
    from finerank.evaluation.first_stage import make_first_stage

    if first_stage not in FIRST_STAGES:
        raise InvalidInputError(f"--first-stage must be one of {', '.join(FIRST_STAGES)}")
    data = load_beir(dataset, split=split).head(max_queries)
    stage = make_first_stage(first_stage, embedding_model=embedding_model, device=device)
    reranker = None
    if model:
        from finerank import Reranker

        reranker = Reranker.from_pretrained(
            model, device=device, dtype=dtype, max_length=max_length
        )
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
            instruction=instruction,
            settings={"model": model, "embedding_model": embedding_model},
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
