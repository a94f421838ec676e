"""``finerank eval``: first-stage and reranked metrics, several datasets x several modes.

Without ``--dataset``, the datasets shipped in the package (``stard``); each ``--dataset`` is a
shipped name or a BEIR directory. Without ``--first-stage``, ``bm25`` and ``bm25+prf``, plus
``dense``, ``hybrid`` and ``hybrid+prf`` when an embedding model is given. Each dataset is
indexed once for all its modes; records titled as statute articles (``<law>第N条``) are
indexed as chunks of their law's file, so document context applies as it does to a law
indexed from its file. Fusion, feedback and document context come from the ``FINERANK_*``
settings (``--fusion`` / ``--rrf-k`` override them).

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


def register(app: typer.Typer) -> None:
    """Add ``finerank eval`` to the main app."""
    app.command("eval")(eval_command)


@friendly_errors
def eval_command(
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            help="Shipped dataset name (stard) or BEIR dir; repeatable \\[every shipped one].",
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="qrels/<split>.tsv \\[the dataset's only split, else test].")
    ] = None,
    first_stage: Annotated[
        list[str] | None,
        typer.Option(
            help="bm25 | bm25+prf | dense | hybrid | hybrid+prf; repeatable or comma separated "
            "\\[bm25, bm25+prf; all five with --embedding-model]."
        ),
    ] = None,
    recall_k: Annotated[int, typer.Option(min=1, help="Candidates from the first stage.")] = 100,
    rerank_k: Annotated[int, typer.Option(min=1, help="Top candidates reranked.")] = 100,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Reranker \\[FINERANK_MODEL; none: first stage only]."),
    ] = None,
    no_rerank: Annotated[
        bool, typer.Option("--no-rerank", help="First stage only (ignore FINERANK_MODEL).")
    ] = False,
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model for dense / hybrid.")
    ] = None,
    fusion: Annotated[str | None, typer.Option(help="Hybrid fusion: dbsf | rrf \\[dbsf].")] = None,
    rrf_k: Annotated[int | None, typer.Option(min=1, help="RRF rank constant \\[2].")] = None,
    instruction: Annotated[
        str | None, typer.Option(help="Task instruction (reranker and Qwen3 query embeddings).")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N queries.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Directory for eval.json, eval.md and eval.png.")
    ] = None,
    plot: Annotated[bool, typer.Option(help="Write eval.png with --output.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_length: Annotated[
        int | None, typer.Option(min=16, help="Reranker tokens per pair \\[8192].")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda \\[auto]")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto | float32 | bfloat16 | float16 \\[auto]")
    ] = None,
) -> None:
    """Evaluate first stages and reranking (NDCG@10, MRR@10, Recall@10/100, MAP) in one table."""
    from finerank.evaluation import load_beir
    from finerank.evaluation.dataset import SHIPPED
    from finerank.evaluation.first_stage import Bm25sFirstStage, make_first_stage
    from finerank.evaluation.suite import EvalSuite, evaluate_modes
    from finerank.runtime import Runtime

    settings = cli_settings(
        model=model,
        embedding_model=embedding_model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        instruction=instruction,
        fusion=fusion,
        rrf_k=rrf_k,
    )
    runtime = Runtime(settings)
    modes = _modes(first_stage, runtime.has("embedder"))
    names = list(dataset or SHIPPED)
    # load every dataset first: a bad path fails before any model is loaded
    datasets = [load_beir(name, split=split).head(max_queries) for name in names]
    embedder = runtime.embedder() if runtime.has("embedder") else None
    stage = make_first_stage(
        modes[0], embedder=embedder, settings=settings, instruction=settings.instruction
    )
    if not first_stage and isinstance(stage, Bm25sFirstStage):
        modes = ["bm25"]  # without the retrieval extra, plain BM25 is the only default mode
    for mode in modes[1:]:
        stage.for_mode(mode)  # every mode is possible before anything runs
    reranker = runtime.reranker() if runtime.has("reranker") and not no_rerank else None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    err = Console(stderr=True)
    reports = []
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def show(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        try:
            for data in datasets:
                reports += evaluate_modes(
                    data,
                    stage,
                    modes,
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
        finally:
            close = getattr(stage, "close", None)
            if close is not None:
                close()
    suite = EvalSuite(
        reports,
        settings={
            "datasets": names,
            "modes": modes,
            "model": settings.model if reranker is not None else None,
            "embedding_model": settings.embedding_model,
            "recall_k": recall_k,
            "rerank_k": rerank_k if reranker is not None else None,
            "fusion": settings.fusion,
            "rrf_k": settings.rrf_k,
            "prf": {
                "docs": settings.prf_docs,
                "terms": settings.prf_terms,
                "weight": settings.prf_weight,
            },
            "document_context": {
                "weight": settings.document_weight,
                "depth": settings.document_depth,
                "index_weight": settings.document_index_weight,
            },
        },
    )
    if output is not None:
        written = suite.write(output, plot=plot)
        err.print("wrote " + ", ".join(str(path) for path in written))
    if as_json:
        typer.echo(json.dumps(suite.to_dict(), ensure_ascii=False, indent=2))
        return
    _print_table(suite)


def _modes(values: list[str] | None, has_embedder: bool) -> list[str]:
    if not values:
        base = ["bm25", "bm25+prf"]
        return base + (["dense", "hybrid", "hybrid+prf"] if has_embedder else [])
    modes = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(modes))


def _print_table(suite) -> None:
    from finerank.cli.tables import Column, print_table
    from finerank.evaluation.harness import METRICS
    from finerank.evaluation.suite import LABELS

    columns = [
        Column("dataset", shrink=1, min_width=5),
        Column("mode", shrink=2, min_width=6),
        Column("stage", shrink=2, min_width=5),
        *(Column(LABELS[metric], justify="right") for metric in METRICS),
    ]
    rows = [
        [
            row["dataset"],
            row["mode"],
            "1st" if row["stage"] == "first stage" else "rerank",
            *(f"{row[metric]:.4f}" for metric in METRICS),
        ]
        for row in suite.rows()
    ]
    described = {(r["dataset"], r["split"], r["queries"]) for r in suite.rows()}
    title = "; ".join(f"{d} / {s}: {q} queries" for d, s, q in sorted(described))
    print_table(title, columns, rows)
