"""``finerank ui``: the web page alone (Rerank and Search tabs), bound to 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from finerank.cli.common import bound_port, friendly_errors, serve_until_stopped


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
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Require this key to open the page (repeatable)."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", help="Host name to answer for besides loopback ones."),
    ] = None,
) -> None:
    """Serve the web page: rerank documents, or search a collection and see what the
    reranker changed. Open http://HOST:PORT/ui/ in a browser."""
    import uvicorn

    from finerank.server.protocol import uvicorn_config
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
        "api_keys": api_key or None,
        "allowed_hosts": allowed_host or None,
    }
    settings = Settings(**{name: value for name, value in flags.items() if value is not None})
    failure: list[str] = []
    holder: dict[str, Any] = {}

    def on_load_error(exc: BaseException) -> None:
        # A model that cannot load: one line and exit 2, as serve does. A store that cannot
        # open (e.g. locked by another process): the Rerank tab still works, Search says why.
        failed = [c for c in holder["app"].state.runtime.status() if c.error is not None]
        models = [c for c in failed if c.name != "store"]
        if models:
            failure.append(models[0].describe())
            holder["server"].should_exit = True
        else:
            message = failed[0].describe() if failed else str(exc)
            typer.secho(f"warning: {message} (the Search tab says so)", err=True)

    app = create_ui_app(settings, collection=collection, on_load_error=on_load_error)
    holder["app"] = app
    config = uvicorn_config(app, settings, log_level="warning")
    server = uvicorn.Server(config)
    holder["server"] = server
    serve_until_stopped(_serve_and_announce(server, app, settings))
    if failure:
        typer.secho(f"error: {failure[0]}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)


async def _serve_and_announce(server, app, settings) -> None:
    """Print the ready line once the page is served and every component has loaded (or, for
    the store, failed: the Rerank tab works without it); a model that fails stops the server
    before."""
    from finerank.runtime import ComponentState

    runtime = app.state.runtime
    settled = (ComponentState.READY, ComponentState.FAILED)
    task = asyncio.create_task(server.serve())
    while not task.done():
        states = runtime.status()
        if server.started and all(c.state in settled for c in states):
            model_failed = any(c.error is not None and c.name != "store" for c in states)
            if not (server.should_exit or model_failed):
                port = bound_port(server, settings.port)
                keyed = " (needs the API key)" if settings.api_keys else ""
                url = f"http://{settings.host}:{port}/ui/"
                typer.secho(f"finerank ui ready: {url}{keyed}", err=True)
            break
        await asyncio.sleep(0.05)
    await task
