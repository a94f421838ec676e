"""``finerank serve``: the HTTP rerank service (Cohere / Jina / vLLM / TEI dialects).

The command only builds a :class:`~finerank.settings.Settings` from its flags (unset flags fall
back to ``FINERANK_*`` environment variables, then defaults) and hands it to a runner
(:func:`run_server`, or Ray's); the runner's app builds everything through
:class:`~finerank.runtime.Runtime`. With no ``--model`` (and no ``FINERANK_MODEL``) it serves
:data:`~finerank.runtime.DEFAULT_RERANKER`, from the local Hugging Face cache or downloaded
once; where neither works, one message says what to do
(:func:`~finerank.runtime.default_model_unavailable`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finerank.cli.common import bound_port, cli_settings, friendly_errors, serve_until_stopped
from finerank.errors import InvalidInputError

if TYPE_CHECKING:
    from finerank.settings import Settings

logger = logging.getLogger("finerank.server")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


@friendly_errors
def serve_command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Reranker directory or hub id \\[Qwen/Qwen3-Reranker-0.6B]."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address \\[127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port \\[8000]; 0 picks a free one.")] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="Name clients send as 'model' \\[model dir name].")
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' (repeatable)."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", help="Host name to answer for besides loopback ones."),
    ] = None,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help="Token budget of one forward pass \\[16384].")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per pair \\[8192].")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16")] = None,
    family: Annotated[str | None, typer.Option(help="qwen3 | seq-cls (default: detect)")] = None,
    instruction: Annotated[str | None, typer.Option(help="Default instruction (Qwen3).")] = None,
    long_document: Annotated[str | None, typer.Option(help="truncate | chunk \\[truncate]")] = None,
    max_documents: Annotated[
        int | None, typer.Option(help="Max documents per request \\[1000].")
    ] = None,
    max_tokens_per_request: Annotated[
        int | None, typer.Option(help="Max tokens per request \\[2000000].")
    ] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Max body size \\[20 MiB].")] = None,
    max_queue_pairs: Annotated[
        int | None, typer.Option(help="Pairs waiting before 429 \\[20000].")
    ] = None,
    batch_wait_ms: Annotated[
        float | None, typer.Option(help="Wait to fill a batch under load \\[2.0].")
    ] = None,
    protect_health: Annotated[
        bool | None, typer.Option(help="Require the API key on /health and /metrics.")
    ] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="Embedding model: /v1/embeddings, dense and hybrid search."),
    ] = None,
    ui: Annotated[bool | None, typer.Option("--ui", help="Mount the web page at /ui.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Embedded Qdrant data dir (mounts the search routes).")
    ] = None,
    qdrant_url: Annotated[
        str | None, typer.Option(help="Qdrant server URL (mounts the search routes).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Serve on Ray Serve replicas.")] = False,
    replicas: Annotated[int | None, typer.Option(help="Ray: model replicas \\[1].")] = None,
    autoscale: Annotated[
        str | None, typer.Option(help="Ray: autoscale between MIN:MAX replicas.")
    ] = None,
    gpus_per_replica: Annotated[float, typer.Option(help="Ray: GPUs per replica.")] = 0.0,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray: cluster address \\[RAY_ADDRESS or local].")
    ] = None,
) -> None:
    """Serve the rerank API over HTTP (binds 127.0.0.1:8000 by default)."""
    settings, defaulted = serve_settings(
        model=model,
        host=host,
        port=port,
        served_model_name=served_model_name,
        api_keys=api_key or None,
        allowed_hosts=allowed_host or None,
        max_batch_tokens=max_batch_tokens,
        max_length=max_length,
        device=device,
        dtype=dtype,
        family=family,
        instruction=instruction,
        long_document=long_document,
        max_documents_per_request=max_documents,
        max_tokens_per_request=max_tokens_per_request,
        max_body_bytes=max_body_bytes,
        max_queue_pairs=max_queue_pairs,
        batch_wait_ms=batch_wait_ms,
        protect_health=protect_health,
        embedding_model=embedding_model,
        ui=ui,
        data_dir=data_dir,
        qdrant_url=qdrant_url,
    )
    if defaulted:
        from finerank.runtime import fetch_default_reranker

        fetch_default_reranker()  # before the port opens: one clear message if it cannot
    if ray:
        from finerank.distributed.serve import Scaling, run_ray_server

        scaling = Scaling.parse(replicas, autoscale)
        raise typer.Exit(
            run_ray_server(
                settings,
                scaling=scaling,
                gpus_per_replica=gpus_per_replica,
                ray_address=ray_address,
            )
        )
    if replicas is not None or autoscale is not None or gpus_per_replica or ray_address:
        raise InvalidInputError(
            "--replicas, --autoscale, --gpus-per-replica, --ray-address need --ray"
        )
    raise typer.Exit(run_server(settings, log_level=log_level, access_log=access_log))


def serve_settings(**flags: Any) -> tuple[Settings, bool]:
    """Settings from the flags that were given (the rest from ``FINERANK_*`` / defaults), and
    whether the reranker is the default one (no ``--model``, no ``FINERANK_MODEL``)."""
    from finerank.runtime import DEFAULT_RERANKER

    settings = cli_settings(**flags)
    if settings.model:
        return settings, False
    return settings.model_copy(update={"model": DEFAULT_RERANKER}), True


def run_server(settings: Settings, *, log_level: str = "info", access_log: bool = False) -> int:
    """Run uvicorn until SIGTERM/SIGINT (graceful: in-flight requests are answered).

    Returns the exit code: 0 after a clean shutdown, 2 if a component failed to load.
    """
    import uvicorn

    from finerank.server.app import create_app
    from finerank.server.protocol import uvicorn_config

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    failure: list[BaseException] = []
    holder: dict[str, uvicorn.Server] = {}

    def on_load_error(exc: BaseException) -> None:
        failure.append(exc)
        holder["server"].should_exit = True

    app = create_app(settings, on_load_error=on_load_error)
    config = uvicorn_config(
        app,
        settings,
        log_level=log_level.lower(),
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=None,
    )
    server = uvicorn.Server(config)
    holder["server"] = server
    serve_until_stopped(_serve_and_announce(server, app, settings))
    if failure:
        failed = app.state.runtime.failed
        message = failed.describe() if failed is not None else f"failed to load: {failure[0]}"
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        return 2
    return 0


async def _serve_and_announce(server, app, settings: Settings) -> None:
    import asyncio

    from finerank.models.hardware import dtype_report

    task = asyncio.create_task(server.serve())
    runtime = app.state.runtime
    while not task.done():
        if server.started and runtime.ready:
            url = f"http://{settings.host}:{bound_port(server, settings.port)}"
            page = f"; page: {url}/ui/" if settings.ui else ""
            name = runtime.rerank.model_name if runtime.rerank is not None else "no reranker"
            logger.info("finerank ready: serving %r on %s (docs: /docs%s)", name, url, page)
            if runtime.rerank is not None and runtime.rerank.reranker is not None:
                backend = runtime.rerank.reranker.backend
                logger.info("finerank %s", dtype_report(backend.device, backend.dtype))
            break
        await asyncio.sleep(0.05)
    await task
