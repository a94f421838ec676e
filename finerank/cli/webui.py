"""``finerank ui``: the web page alone (Rerank and Search tabs), bound to 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finerank.cli.common import friendly_errors


def register(app: typer.Typer) -> None:
    """Add ``finerank ui`` to the main app."""
    app.command("ui")(ui_command)


@friendly_errors
def ui_command(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Reranker directory or hub id.")
    ] = None,
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model for dense / hybrid search.")
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection selected in Search.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes it).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535)] = 7860,
    data_dir: Annotated[
        Path | None, typer.Option(help="Embedded Qdrant directory (as for finerank index).")
    ] = None,
    qdrant_url: Annotated[str | None, typer.Option(help="Qdrant server URL.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16")] = None,
    max_length: Annotated[int | None, typer.Option(min=16, help="Tokens per pair.")] = None,
) -> None:
    """Serve the web page: rerank documents, or search a collection and see what the
    reranker changed. Open http://HOST:PORT/ui/ in a browser."""
    import uvicorn

    from finerank.settings import Settings
    from finerank.ui.app import create_ui_app

    flags = {
        "model": model,
        "embedding_model": embedding_model,
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "qdrant_url": qdrant_url,
        "device": device,
        "dtype": dtype,
        "max_length": max_length,
    }
    settings = Settings(**{name: value for name, value in flags.items() if value is not None})
    app = create_ui_app(settings, collection=collection)
    typer.secho(f"finerank ui on http://{settings.host}:{settings.port}/ui/", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
