"""``finerank make-test-model``: build a random-weight model to try finerank without downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finerank.cli.common import friendly_errors


def register(app: typer.Typer) -> None:
    app.command("make-test-model")(make_test_model)


@friendly_errors
def make_test_model(
    target: Annotated[Path, typer.Argument(help="Directory to write the model to.")],
    kind: Annotated[
        str, typer.Option(help="qwen3-reranker | qwen3-embedding | bert-cross-encoder")
    ] = "qwen3-reranker",
    size: Annotated[str, typer.Option(help="tiny | 0.6b (qwen3-reranker only)")] = "tiny",
) -> None:
    """Write a RANDOM-WEIGHT model with the real tokenizer (scores are meaningless; the
    arithmetic, speed and API are the real thing)."""
    from finerank import testing

    if kind == "qwen3-reranker":
        path = testing.build_qwen3_reranker(target, size=size)  # type: ignore[arg-type]
    elif kind == "qwen3-embedding":
        path = testing.build_qwen3_embedding(target)
    elif kind == "bert-cross-encoder":
        path = testing.build_bert_cross_encoder(target)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    typer.echo(f"wrote {kind} ({size}) to {path}")
