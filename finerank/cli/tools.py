"""``finerank make-test-model``: build a random-weight model to try finerank without downloads."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from finerank.cli.common import friendly_errors
from finerank.errors import InvalidInputError


class ModelKind(StrEnum):
    qwen3_reranker = "qwen3-reranker"
    qwen3_embedding = "qwen3-embedding"
    bert_cross_encoder = "bert-cross-encoder"


class ModelSize(StrEnum):
    tiny = "tiny"
    qwen3_06b = "0.6b"


def register(app: typer.Typer) -> None:
    app.command("make-test-model")(make_test_model)


@friendly_errors
def make_test_model(
    target: Annotated[Path, typer.Argument(help="Directory to create (must not hold files).")],
    kind: Annotated[ModelKind, typer.Option(help="What to build.")] = ModelKind.qwen3_reranker,
    size: Annotated[
        ModelSize,
        typer.Option(help="tiny, or 0.6b: the compute of Qwen3-Reranker-0.6B (qwen3-reranker)."),
    ] = ModelSize.tiny,
    overwrite: Annotated[bool, typer.Option(help="Replace what DIR holds.")] = False,
) -> None:
    """Write a RANDOM-WEIGHT model with the real tokenizer, offline (scores are meaningless;
    the arithmetic, speed and API are the real thing). DIR appears complete or not at all;
    re-running the same command keeps the model already there."""
    from finerank import testing

    if size is not ModelSize.tiny and kind is not ModelKind.qwen3_reranker:
        raise InvalidInputError(f"--size {size.value} applies to qwen3-reranker only")
    use = f"finerank serve --model {target}"
    if kind is ModelKind.qwen3_embedding:
        use = f"finerank serve --model RERANKER --embedding-model {target}"
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        info = testing.test_model_info(target) or {}
        if info.get("kind") != kind.value or info.get("size") != size.value:
            raise FileExistsError(
                f"{target} is not empty: choose a new directory or pass --overwrite"
            )
        typer.echo(f"{target} already holds a random-weight {kind.value} ({size.value}); kept it")
    else:
        if kind is ModelKind.qwen3_reranker:
            testing.build_qwen3_reranker(target, size=size.value, overwrite=overwrite)  # type: ignore[arg-type]
        elif kind is ModelKind.qwen3_embedding:
            testing.build_qwen3_embedding(target, overwrite=overwrite)
        else:
            testing.build_bert_cross_encoder(target, overwrite=overwrite)
        typer.echo(f"wrote a random-weight {kind.value} ({size.value}) to {target}")
    typer.echo(f"use it: {use}", err=True)
