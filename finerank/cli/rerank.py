"""``finerank rerank``: score documents against a query from the command line.

Flags override ``FINERANK_*`` settings (``FINERANK_MODEL`` names the model when ``--model`` is
not given); the reranker is built by :class:`~finerank.runtime.Runtime` like everywhere else,
with eager kernels unless ``FINERANK_COMPILE=1`` (one request saves less than compiling costs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from finerank.cli.common import cli_settings, friendly_errors, read_documents
from finerank.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    app.command("rerank")(rerank_command)


@friendly_errors
def rerank_command(
    query: Annotated[str, typer.Option("--query", "-q", help="The query.")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model directory or hub id \\[FINERANK_MODEL]."),
    ] = None,
    doc: Annotated[
        list[str] | None, typer.Option("--doc", "-d", help="A document (repeat).")
    ] = None,
    docs_file: Annotated[
        Path | None, typer.Option("--docs-file", "-f", help="One document per line, or JSONL.")
    ] = None,
    instruction: Annotated[str | None, typer.Option(help="Task instruction (Qwen3).")] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", "-n", min=1)] = None,
    max_length: Annotated[
        int | None, typer.Option(min=16, help="Tokens per pair \\[8192].")
    ] = None,
    long_document: Annotated[str | None, typer.Option(help="truncate | chunk \\[truncate]")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda \\[auto]")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto | float32 | bfloat16 | float16 \\[auto]")
    ] = None,
    family: Annotated[str | None, typer.Option(help="qwen3 | seq-cls (default: detect)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Rank documents for a query, best first."""
    documents = list(doc or [])
    if docs_file is not None:
        documents.extend(read_documents(docs_file))
    if not documents:
        raise InvalidInputError("no documents: pass --doc TEXT (repeatable) or --docs-file FILE")
    from finerank.runtime import Runtime

    settings = cli_settings(
        model=model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        family=family,
        long_document=long_document,
        instruction=instruction,
    )
    if not settings.model:
        raise InvalidInputError("no model: pass --model PATH_OR_ID (or set FINERANK_MODEL)")
    # one request: compiling kernels would cost more than it saves (FINERANK_COMPILE=1 still
    # compiles)
    reranker = Runtime(settings, compile="off").reranker()
    results = reranker.rerank(
        query,
        documents,
        instruction=settings.instruction,
        top_n=top_n,
        return_documents=True,
        long_document=settings.long_document,
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
