"""The HTTP rerank service: Cohere, Jina, vLLM and TEI dialects on one batched model.

``create_app`` has no side effects: the model loads in the app's lifespan, in the background,
so ``/health`` answers 503 until it is ready (readiness probes) and 200 after.

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
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter, ValidationError

from finerank.engine.engine import ScoreResult
from finerank.server.apidocs import install_api_docs
from finerank.server.auth import api_key_dependency
from finerank.server.errors import (
    ClientDisconnectedError,
    error_response,
    install_error_handlers,
)
from finerank.server.metrics import ObservedApp, ServerMetrics
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

RETRIEVAL_ROUTES_MODULE = "finerank.server.retrieval_routes"
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 503)
}
_TEI_LIST = TypeAdapter(list[TeiRank])


def create_app(
    settings: Settings | None = None,
    service: RerankService | None = None,
    *,
    on_ready: Callable[[], None] | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the FastAPI app (loads nothing until the app's lifespan starts).

    ``service``: serve an existing :class:`RerankService` (started or not); by default one is
    made from ``settings``. If the app starts the service, it also stops it (draining) at
    shutdown. ``on_ready`` / ``on_load_error`` are called once the background load ends.
    """
    settings = settings or (service.settings if service is not None else Settings())
    service = service or RerankService(settings)
    metrics = ServerMetrics()
    service.add_batch_listener(metrics.observe_batch)
    metrics.queue_depth.set_function(lambda: service.queued_pairs)
    metrics.ready.set_function(lambda: 1.0 if service.ready else 0.0)
    metrics.dropped_pairs.set_function(
        lambda: service.scheduler.dropped_pairs if service.scheduler is not None else 0
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_service = not service.ready
        loader = None
        if owns_service and service.reranker is not None:
            service.start()  # model already in memory: ready before the first request
            if on_ready is not None:
                on_ready()
        elif owns_service:
            loader = asyncio.create_task(_load(app))
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                logger.info("waiting for the model load to finish before shutting down")
                await asyncio.shield(loader)
            if owns_service:
                await asyncio.to_thread(service.stop, drain=True)

    async def _load(app: FastAPI) -> None:
        try:
            await asyncio.to_thread(service.start)
        except Exception as exc:  # noqa: BLE001 - reported through /health and the callback
            app.state.load_error = exc
            logger.error("model failed to load: %s", exc)
            if on_load_error is not None:
                on_load_error(exc)
            return
        if on_ready is not None:
            on_ready()

    app = FastAPI(
        title="finerank",
        summary="Rerank service: Cohere v2, Jina/vLLM, TEI and vLLM score dialects.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # served from the package (install_api_docs), not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    app.state.load_error = None
    install_error_handlers(app)

    auth = api_key_dependency(settings.api_keys)
    api = APIRouter(dependencies=[Depends(auth)], responses=_ERRORS)
    _add_rerank_routes(api, service, metrics)
    _add_score_and_models(api, service)
    app.include_router(api)
    ops = APIRouter(dependencies=[Depends(auth)] if settings.protect_health else [])
    _add_ops_routes(ops, app, service, metrics)
    app.include_router(ops)

    _include_retrieval(app, settings, auth)
    if settings.ui:
        _mount_ui(app, service, settings)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    install_api_docs(app)
    install_security(app, settings)
    app.add_middleware(
        ObservedApp,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        error_response=error_response,
    )
    return app


# ---- routes ---------------------------------------------------------------------------------
def _add_rerank_routes(api: APIRouter, service: RerankService, metrics: ServerMetrics) -> None:
    async def run_rerank(request: Request, body: RerankRequest, documents_default: bool):
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
        return outcome, results

    @api.post(
        "/v2/rerank", response_model=RerankResponseV2, tags=["rerank"], **_json_body(RerankRequest)
    )
    async def rerank_v2(request: Request) -> Response:
        """Cohere v2: ``{id, results: [{index, relevance_score}], meta}`` (documents on request)."""
        body = await _parse(request, RerankRequest)
        outcome, results = await run_rerank(request, body, documents_default=False)
        return _json(
            RerankResponseV2(
                id=_new_id(),
                results=results,
                meta=MetaV2(
                    billed_units=BilledUnits(search_units=_search_units(outcome)),
                    tokens=Tokens(input_tokens=outcome.prompt_tokens),
                ),
            )
        )

    @api.post(
        "/v1/rerank", response_model=RerankResponseV1, tags=["rerank"], **_json_body(RerankRequest)
    )
    async def rerank_v1(request: Request) -> Response:
        """Jina / vLLM: ``{id, model, usage, results: [{index, relevance_score, document}]}``."""
        body = await _parse(request, RerankRequest)
        outcome, results = await run_rerank(request, body, documents_default=True)
        return _json(_v1_response(service, outcome, results))

    @api.post(
        "/rerank",
        response_model=RerankResponseV1 | list[TeiRank],
        tags=["rerank"],
        **_json_body(RerankRequest),
    )
    async def rerank_plain(request: Request) -> Response:
        """Jina / vLLM shape; with ``texts`` (TEI) the bare list ``[{index, score, text?}]``."""
        body = await _parse(request, RerankRequest)
        if body.texts is None:
            outcome, results = await run_rerank(request, body, documents_default=True)
            return _json(_v1_response(service, outcome, results))
        outcome, _ = await run_rerank(request, body, documents_default=False)
        ranks = [
            TeiRank(
                index=r.index,
                score=r.logit if body.raw_scores else r.score,
                text=body.texts[r.index] if body.return_text else None,
            )
            for r in outcome.results
        ]
        return Response(
            _TEI_LIST.dump_json(ranks, exclude_none=True), media_type="application/json"
        )


def _add_score_and_models(api: APIRouter, service: RerankService) -> None:
    created = int(time.time())

    @api.post("/v1/score", response_model=ScoreResponse, tags=["score"], **_json_body(ScoreRequest))
    async def score(request: Request) -> Response:
        """vLLM: ``text_1`` (one query, or one per pair) against ``text_2``; scores in order."""
        body = await _parse(request, ScoreRequest)
        service.check_model(body.model)
        outcome = await _unless_disconnected(
            request,
            request.app.state.metrics,
            service.score(body.text_1, body.text_2, instruction=body.instruction),
        )
        return _json(
            ScoreResponse(
                id=_new_id(),
                created=int(time.time()),
                model=service.model_name,
                data=[ScoreData(index=r.index, score=r.score) for r in outcome.results],
                usage=Usage(
                    prompt_tokens=outcome.prompt_tokens, total_tokens=outcome.prompt_tokens
                ),
            )
        )

    @api.get("/v1/models", response_model=ModelList, tags=["models"])
    async def models() -> Response:
        """The served model (OpenAI-style list)."""
        reranker = service.reranker
        card = ModelCard(
            id=service.model_name,
            created=created,
            root=service.settings.model,
            max_model_len=reranker.max_length if reranker else service.settings.max_length,
            family=reranker.family if reranker else None,
        )
        return _json(ModelList(data=[card]))


def _add_ops_routes(
    ops: APIRouter, app: FastAPI, service: RerankService, metrics: ServerMetrics
) -> None:
    @ops.get(
        "/health", response_model=Health, tags=["ops"], responses={503: {"model": ErrorResponse}}
    )
    async def health() -> Response:
        """200 once the model is loaded; 503 while loading, after a failed load, or stopping."""
        if service.ready:
            return _json(Health(model=service.model_name))
        error = app.state.load_error
        if error is not None:
            return error_response(503, f"model failed to load: {error}", "model_unavailable")
        return error_response(
            503, "model is loading (or the service is stopping)", "service_unavailable"
        )

    @ops.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


# ---- extension points -----------------------------------------------------------------------
def _include_retrieval(app: FastAPI, settings: Settings, auth: Callable[..., Any]) -> None:
    """Mount the retrieval routes (search, collections, embeddings) when configured."""
    if not settings.embedding_model:
        return
    try:
        module = importlib.import_module(RETRIEVAL_ROUTES_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != RETRIEVAL_ROUTES_MODULE:
            raise  # a dependency of the module is missing: say so
        logger.warning("embedding_model is set but %s is not installed", RETRIEVAL_ROUTES_MODULE)
        return
    app.include_router(module.build_router(settings), dependencies=[Depends(auth)])


def _mount_ui(app: FastAPI, service: RerankService, settings: Settings) -> None:
    """Let the web page mount itself at /ui (``finerank.ui.app.mount_ui``)."""
    try:
        module = importlib.import_module("finerank.ui.app")
    except ModuleNotFoundError as exc:
        if exc.name != "finerank.ui.app":
            raise
        logger.warning("ui is on but finerank.ui.app is not available; /ui is not mounted")
        return
    module.mount_ui(app, service, settings)


# ---- helpers --------------------------------------------------------------------------------
async def _parse(request: Request, model: type[M]) -> M:
    """Validate the JSON body whatever the Content-Type (curl -d sends a form type)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


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


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


def _new_id() -> str:
    return str(uuid.uuid4())


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for routes that parse their body themselves (see :func:`_parse`)."""
    return {
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            }
        }
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (RerankRequest, ScoreRequest):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    app.openapi_schema = schema
    return schema


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("finerank")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0.0.0"
