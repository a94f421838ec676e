"""``finerank rerank``: score documents against a query from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from finerank.cli.common import friendly_errors, read_documents
from finerank.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    app.command("rerank")(rerank_command)


@friendly_errors
def rerank_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Model directory or hub id.")],
    query: Annotated[str, typer.Option("--query", "-q", help="The query.")],
    doc: Annotated[
        list[str] | None, typer.Option("--doc", "-d", help="A document (repeat).")
    ] = None,
    docs_file: Annotated[
        Path | None, typer.Option("--docs-file", "-f", help="One document per line, or JSONL.")
    ] = None,
    instruction: Annotated[str | None, typer.Option(help="Task instruction (Qwen3).")] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", "-n", min=1)] = None,
    max_length: Annotated[int, typer.Option(min=16)] = 8192,
    long_document: Annotated[str, typer.Option(help="truncate | chunk")] = "truncate",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
    family: Annotated[str | None, typer.Option(help="qwen3 | seq-cls (default: detect)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Rank documents for a query, best first."""
    documents = list(doc or [])
    if docs_file is not None:
        documents.extend(read_documents(docs_file))
    if not documents:
        raise InvalidInputError("no documents: pass --doc TEXT (repeatable) or --docs-file FILE")
    from finerank import Reranker

    reranker = Reranker.from_pretrained(
        model, device=device, dtype=dtype, max_length=max_length, family=family
    )
    results = reranker.rerank(
        query,
        documents,
        instruction=instruction,
        top_n=top_n,
        return_documents=True,
        long_document=long_document,  # type: ignore[arg-type]
    )
    if as_json:
        payload = [
            {
                "rank": rank,
                "index": r.index,
                "score": r.score,
                "logit": r.logit,
                **({"span": list(r.span)} if r.span else {}),
                "document": r.document,
            }
            for rank, r in enumerate(results, start=1)
        ]
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    from finerank.cli.tables import Column, print_table

    rows = []
    for rank, r in enumerate(results, start=1):
        text = r.document or ""
        if r.span:
            text = text[r.span[0] : r.span[1]]
        rows.append([str(rank), str(r.index), f"{r.score:.4f}", f"{r.logit:+.3f}", text])
    columns = [Column(name, justify="right") for name in ("rank", "index", "score", "logit")]
    columns.append(Column("document", shrink=1, max_width=80))
    print_table(f"{reranker.family} reranker: {len(documents)} documents", columns, rows)
