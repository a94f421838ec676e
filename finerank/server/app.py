"""The HTTP service: Cohere, Jina, vLLM and TEI rerank dialects, OpenAI embeddings, search.

``create_app`` has no side effects: the app serves a :class:`~finerank.runtime.Runtime`, whose
components (reranker, embedder, store) load in the app's lifespan, in the background, so
``/health`` answers 503 (naming the component still loading) until every configured component
is ready (readiness probes) and 200 after. The retrieval routes are mounted whenever a store
is configured (``--data-dir``, ``--qdrant-url`` or ``--embedding-model``).

Example:
    >>> from finerank.settings import Settings
    >>> app = create_app(Settings(model="/models/Qwen3-Reranker-0.6B"))  # nothing loaded yet
    >>> sorted(path for path in app.openapi()["paths"] if "rerank" in path)
    ['/rerank', '/v1/rerank', '/v2/rerank']

Run it with ``finerank serve`` or any ASGI server (``uvicorn.run(app)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import PurePath
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import TypeAdapter

from finerank.engine.engine import ScoreResult
from finerank.runtime import Runtime
from finerank.server.apidocs import install_api_docs
from finerank.server.auth import api_key_dependency
from finerank.server.errors import (
    ClientDisconnectedError,
    error_response,
    install_error_handlers,
)
from finerank.server.metrics import ObservedApp, ServerMetrics
from finerank.server.routing import (
    json_body,
    json_response,
    openapi_bodies,
    parse_body,
    timing_headers,
)
from finerank.server.schemas import (
    BilledUnits,
    DocumentOut,
    ErrorResponse,
    Health,
    MetaV2,
    ModelCard,
    ModelList,
    RerankRequest,
    RerankResponseV1,
    RerankResponseV2,
    RerankResult,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
    SpanOut,
    TeiRank,
    Tokens,
    Usage,
)
from finerank.server.security import install_security
from finerank.service import RerankOutcome, RerankService
from finerank.settings import Settings

logger = logging.getLogger("finerank.server")

T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 503)
}
_TEI_LIST = TypeAdapter(list[TeiRank])


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    *,
    on_ready: Callable[[], None] | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the FastAPI app (loads nothing until the app's lifespan starts).

    Args:
        settings: the configuration (default: ``runtime.settings``, else ``Settings()``).
        runtime: serve an existing :class:`~finerank.runtime.Runtime` (started or not; by
            default one is made from ``settings``). If the app starts it, it also stops it
            (draining) at shutdown.
        on_ready / on_load_error: called once the background load ends.

    Returns:
        The app; run it with ``finerank serve`` or any ASGI server.
    """
    runtime = runtime or Runtime(settings)
    settings = runtime.settings
    metrics = ServerMetrics()
    if runtime.rerank is not None:
        service = runtime.rerank
        service.add_batch_listener(metrics.observe_batch)
        service.add_request_listener(metrics.request_listener("rerank"))
        metrics.queue_depth.set_function(lambda: service.queued_pairs)
        metrics.preparing.set_function(lambda: service.preparing)
        metrics.dropped_pairs.set_function(
            lambda: service.scheduler.dropped_pairs if service.scheduler is not None else 0
        )
    if runtime.embeddings is not None:
        embeddings = runtime.embeddings
        embeddings.add_batch_listener(metrics.observe_embedding_batch)
        embeddings.add_request_listener(metrics.request_listener("embed"))
        metrics.embedding_queue_depth.set_function(lambda: embeddings.queued_pairs)
    metrics.ready.set_function(lambda: 1.0 if runtime.ready else 0.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_runtime = not runtime.ready
        loader = None
        if owns_runtime and runtime.preloaded:
            runtime.start()  # everything in memory already: ready before the first request
            if on_ready is not None:
                on_ready()
        elif owns_runtime:
            loader = asyncio.create_task(_load())
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                logger.info("waiting for the load to finish before shutting down")
                await asyncio.shield(loader)
            if owns_runtime:
                await asyncio.to_thread(runtime.stop, drain=True)

    async def _load() -> None:
        try:
            await asyncio.to_thread(runtime.start)
        except Exception as exc:  # noqa: BLE001 - reported through /health and the callback
            if on_load_error is not None:
                on_load_error(exc)
            return
        if on_ready is not None:
            on_ready()

    app = FastAPI(
        title="finerank",
        summary="Rerank service: Cohere v2, Jina/vLLM, TEI and vLLM score dialects; OpenAI "
        "embeddings; two-stage search.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # served from the package (install_api_docs), not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.metrics = metrics
    install_error_handlers(app)

    auth = api_key_dependency(settings.api_keys)
    api = APIRouter(dependencies=[Depends(auth)], responses=_ERRORS)
    _add_rerank_routes(api, runtime, metrics)
    _add_score_and_models(api, runtime, metrics)
    app.include_router(api)
    ops = APIRouter(dependencies=[Depends(auth)] if settings.protect_health else [])
    _add_ops_routes(ops, runtime, metrics)
    app.include_router(ops)

    if runtime.has("store"):
        from finerank.server.retrieval_routes import build_router

        app.include_router(build_router(runtime), dependencies=[Depends(auth)], responses=_ERRORS)
    if settings.ui:
        _mount_ui(app, runtime)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    install_api_docs(app)
    install_security(app, settings)
    app.add_middleware(
        ObservedApp,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        error_response=error_response,
    )
    return app


# ---- routes ---------------------------------------------------------------------------------
def _add_rerank_routes(api: APIRouter, runtime: Runtime, metrics: ServerMetrics) -> None:
    async def run_rerank(request: Request, body: RerankRequest, documents_default: bool):
        service = runtime.require_rerank()
        service.check_model(body.model)
        documents = body.document_texts()
        outcome = await _unless_disconnected(
            request,
            metrics,
            service.rerank(
                body.query,
                documents,
                instruction=body.instruction,
                top_n=body.wanted_top_n,
                long_document=body.long_document,
                max_tokens_per_doc=body.max_tokens_per_doc,
            ),
        )
        include = documents_default if body.return_documents is None else body.return_documents
        results = [_rerank_result(r, documents, include) for r in outcome.results]
        return service, outcome, results

    @api.post(
        "/v2/rerank", response_model=RerankResponseV2, tags=["rerank"], **json_body(RerankRequest)
    )
    async def rerank_v2(request: Request) -> Response:
        """Cohere v2: ``{id, results: [{index, relevance_score}], meta}`` (documents on request)."""
        body = await parse_body(request, RerankRequest)
        _, outcome, results = await run_rerank(request, body, documents_default=False)
        return json_response(
            RerankResponseV2(
                id=_new_id(),
                results=results,
                meta=MetaV2(
                    billed_units=BilledUnits(search_units=_search_units(outcome)),
                    tokens=Tokens(input_tokens=outcome.prompt_tokens),
                ),
            ),
            headers=timing_headers(outcome.timings),
        )

    @api.post(
        "/v1/rerank", response_model=RerankResponseV1, tags=["rerank"], **json_body(RerankRequest)
    )
    async def rerank_v1(request: Request) -> Response:
        """Jina / vLLM: ``{id, model, usage, results: [{index, relevance_score, document}]}``."""
        body = await parse_body(request, RerankRequest)
        service, outcome, results = await run_rerank(request, body, documents_default=True)
        return json_response(
            _v1_response(service, outcome, results), headers=timing_headers(outcome.timings)
        )

    @api.post(
        "/rerank",
        response_model=RerankResponseV1 | list[TeiRank],
        tags=["rerank"],
        **json_body(RerankRequest),
    )
    async def rerank_plain(request: Request) -> Response:
        """Jina / vLLM shape; with ``texts`` (TEI) the bare list ``[{index, score, text?}]``."""
        body = await parse_body(request, RerankRequest)
        if body.texts is None:
            service, outcome, results = await run_rerank(request, body, documents_default=True)
            return json_response(
                _v1_response(service, outcome, results), headers=timing_headers(outcome.timings)
            )
        _, outcome, _ = await run_rerank(request, body, documents_default=False)
        ranks = [
            TeiRank(
                index=r.index,
                score=r.logit if body.raw_scores else r.score,
                text=body.texts[r.index] if body.return_text else None,
            )
            for r in outcome.results
        ]
        return Response(
            _TEI_LIST.dump_json(ranks, exclude_none=True),
            media_type="application/json",
            headers=timing_headers(outcome.timings),
        )


def _add_score_and_models(api: APIRouter, runtime: Runtime, metrics: ServerMetrics) -> None:
    created = int(time.time())

    @api.post("/v1/score", response_model=ScoreResponse, tags=["score"], **json_body(ScoreRequest))
    async def score(request: Request) -> Response:
        """vLLM: ``text_1`` (one query, or one per pair) against ``text_2``; scores in order."""
        body = await parse_body(request, ScoreRequest)
        service = runtime.require_rerank()
        service.check_model(body.model)
        outcome = await _unless_disconnected(
            request,
            metrics,
            service.score(body.text_1, body.text_2, instruction=body.instruction),
        )
        return json_response(
            ScoreResponse(
                id=_new_id(),
                created=int(time.time()),
                model=service.model_name,
                data=[ScoreData(index=r.index, score=r.score) for r in outcome.results],
                usage=Usage(
                    prompt_tokens=outcome.prompt_tokens, total_tokens=outcome.prompt_tokens
                ),
            ),
            headers=timing_headers(outcome.timings),
        )

    @api.get("/v1/models", response_model=ModelList, tags=["models"])
    async def models() -> Response:
        """Every served model (OpenAI-style list), with its ``kind``: reranker or embedding."""
        return json_response(ModelList(data=model_cards(runtime, created)))


def model_cards(runtime: Runtime, created: int) -> list[ModelCard]:
    """The ``/v1/models`` entries: the reranker, then the embedding model (when configured)."""
    settings = runtime.settings
    cards = []
    if runtime.rerank is not None:
        reranker = runtime.rerank.reranker
        cards.append(
            ModelCard(
                id=runtime.rerank.model_name,
                created=created,
                kind="reranker",
                root=settings.model,
                max_model_len=reranker.max_length if reranker else settings.max_length,
                family=reranker.family if reranker else settings.family,
            )
        )
    if runtime.embeddings is not None:
        embedder = runtime.embeddings.embedder
        source = settings.embedding_model or (embedder.source if embedder else None)
        name = embedder.name if embedder else PurePath(str(source)).name
        cards.append(
            ModelCard(
                id=name,
                created=created,
                kind="embedding",
                root=source,
                max_model_len=getattr(embedder, "max_length", None),
                dimensions=embedder.dimension if embedder else None,
            )
        )
    return cards


def _add_ops_routes(ops: APIRouter, runtime: Runtime, metrics: ServerMetrics) -> None:
    @ops.get(
        "/health", response_model=Health, tags=["ops"], responses={503: {"model": ErrorResponse}}
    )
    async def health() -> Response:
        """200 once every configured component (reranker, embedder, store) is loaded; 503
        while one is loading (the message names it), after a failed load, or stopping."""
        components = {c.name: c.state.value for c in runtime.status()}
        if runtime.ready:
            model = runtime.rerank.model_name if runtime.rerank is not None else None
            return json_response(Health(model=model, components=components))
        failed = runtime.failed
        if failed is not None:
            return error_response(
                503, runtime.not_ready_message(), "model_unavailable", components=components
            )
        return error_response(
            503,
            f"not ready: {runtime.not_ready_message()}",
            "service_unavailable",
            components=components,
        )

    @ops.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


# ---- extension points -----------------------------------------------------------------------
def _mount_ui(app: FastAPI, runtime: Runtime) -> None:
    """Let the web page mount itself at /ui (``finerank.ui.app.mount_ui``) on ``runtime``."""
    try:
        module = importlib.import_module("finerank.ui.app")
    except ModuleNotFoundError as exc:
        if exc.name not in ("finerank.ui.app", "gradio"):
            raise
        logger.warning("ui is on but the web page cannot be loaded (%s); /ui is not mounted", exc)
        return
    from finerank.ui.backend import UIBackend

    module.mount_ui(app, UIBackend(runtime), runtime.settings)


# ---- helpers --------------------------------------------------------------------------------
async def _unless_disconnected(request: Request, metrics: ServerMetrics, work: Awaitable[T]) -> T:
    """Await ``work`` but cancel it (dropping its queued pairs) if the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done() and not watcher.done():  # we were cancelled ourselves
            task.cancel()
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    metrics.disconnects.inc()
    raise ClientDisconnectedError()


async def _wait_disconnect(request: Request) -> None:
    # The body was read already, so per the ASGI spec the next message is the disconnect (sent
    # when the client goes away, or after the response).
    message = await request.receive()
    if message["type"] == "http.disconnect":
        return
    # A server that keeps sending other messages: stop watching rather than spin.
    await asyncio.Event().wait()


def _rerank_result(result: ScoreResult, documents: list[str], include: bool) -> RerankResult:
    document = documents[result.index]
    span = None
    if result.span is not None:
        start, end = result.span
        span = SpanOut(start=start, end=end, text=document[start:end])
    return RerankResult(
        index=result.index,
        relevance_score=result.score,
        document=DocumentOut(text=document) if include else None,
        span=span,
    )


def _v1_response(
    service: RerankService, outcome: RerankOutcome, results: list[RerankResult]
) -> RerankResponseV1:
    return RerankResponseV1(
        id=_new_id(),
        model=service.model_name,
        usage=Usage(prompt_tokens=outcome.prompt_tokens, total_tokens=outcome.prompt_tokens),
        results=results,
    )


def _search_units(outcome: RerankOutcome) -> int:
    # Cohere bills one search unit per query and up to 100 documents.
    return max(1, math.ceil(outcome.num_documents / 100))


def _new_id() -> str:
    return str(uuid.uuid4())


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    openapi_bodies(schema.setdefault("components", {}).setdefault("schemas", {}))
    app.openapi_schema = schema
    return schema


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("finerank")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0.0.0"
