"""HTTP routes of two-stage retrieval (mounted by ``create_app`` when an embedding model is set).

- ``POST /v1/embeddings``: OpenAI format (``input`` string or list, ``model``, ``dimensions``,
  ``encoding_format`` float|base64, ``usage``). finerank extensions: ``input_type``
  (``document`` default, or ``query``) and ``instruction`` (query prompt of Qwen3 models).
- ``POST /v1/search``: first stage (bm25 | dense | hybrid | bm25+prf | hybrid+prf) then the
  server's reranker.
- ``POST /v1/collections/{name}/documents``: chunk, embed and index documents (idempotent:
  a document id re-posted with the same text adds nothing; with new text, replaces its chunks).
- ``GET /v1/collections``, ``GET /v1/collections/{name}``, ``DELETE /v1/collections/{name}``.

The embedder and Qdrant are loaded in the app's lifespan (in the background; requests wait for
it). All retrieval work runs on one worker thread: embedded Qdrant and the embedding model are
not safe to call from several threads at once. The state is at ``app.state.retrieval``.

Example:
    >>> from finerank.settings import Settings
    >>> router = build_router(Settings(embedding_model="/models/Qwen3-Embedding-0.6B"))
    >>> sorted({r.path for r in router.routes})[:2]
    ['/v1/collections', '/v1/collections/{name}']
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from finerank.errors import (
    InvalidInputError,
    LimitExceededError,
    ServiceUnavailableError,
    UnknownModelError,
)
from finerank.settings import Settings

logger = logging.getLogger("finerank.server.retrieval")
T = TypeVar("T")


# ---- schemas --------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send "user" and friends

    input: str | list[str] = Field(..., description="A text or a list of texts.")
    model: str | None = None
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["document", "query"] = "document"
    instruction: str | None = None


class SearchRequest(_Strict):
    collection: str
    query: str = Field(..., min_length=1)
    mode: Literal["bm25", "dense", "hybrid", "bm25+prf", "hybrid+prf"] = "hybrid"
    recall_k: int = Field(100, ge=1, le=10_000)
    rerank_k: int | None = Field(None, ge=1, le=10_000)
    top_n: int = Field(10, ge=1, le=10_000)
    filters: dict[str, str | int | list[str | int]] | None = None
    instruction: str | None = None
    rerank: bool = True


class DocumentIn(_Strict):
    text: str
    id: str | None = Field(None, min_length=1, max_length=512)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(_Strict):
    documents: list[DocumentIn | str] = Field(..., min_length=1)
    chunker: Literal["legal", "markdown", "window"] = "window"
    chunker_options: dict[str, Any] = Field(default_factory=dict)


# ---- state ----------------------------------------------------------------------------------
class RetrievalState:
    """The embedder, the Qdrant store and the search service of one app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.embedder = None
        self.store = None
        self.search = None
        self.load_error: BaseException | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="finerank-retrieval")
        self._loader: asyncio.Task | None = None

    def load(self) -> None:
        from finerank.retrieval.embedder import Embedder
        from finerank.retrieval.search import SearchService
        from finerank.retrieval.store import VectorStore

        s = self.settings
        logger.info("loading embedding model %s", s.embedding_model)
        self.embedder = Embedder.from_pretrained(
            s.embedding_model,
            device=s.device,
            dtype=s.dtype,  # type: ignore[arg-type]
            max_batch_tokens=s.max_batch_tokens,
        )
        self.store = VectorStore.from_settings(s)
        self.search = SearchService.from_settings(s, self.store, embedder=self.embedder)
        logger.info("retrieval ready: %s, Qdrant at %s", self.embedder.name, self.store.location)

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Wait for the load, then run ``func`` on the retrieval thread."""
        if self._loader is not None:
            await asyncio.shield(self._loader)
        if self.load_error is not None or self.search is None:
            raise ServiceUnavailableError(f"retrieval is unavailable: {self.load_error}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: func(*args, **kwargs))

    async def start(self, app: FastAPI | None = None) -> None:
        async def load() -> None:
            # Load after the reranker: transformers' lazy imports are not thread-safe, and
            # two models loading at once would also double the peak memory.
            service = getattr(getattr(app, "state", None), "service", None)
            while service is not None and not (
                service.ready or getattr(app.state, "load_error", None) is not None
            ):
                await asyncio.sleep(0.05)
            try:
                await asyncio.get_running_loop().run_in_executor(self.executor, self.load)
            except Exception as exc:  # noqa: BLE001 - reported by every retrieval route
                self.load_error = exc
                logger.error("retrieval failed to load: %s", exc)

        self._loader = asyncio.create_task(load())

    async def stop(self) -> None:
        if self._loader is not None:
            await asyncio.shield(self._loader)
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.store.close)
        self.executor.shutdown(wait=True)


def _state(request: Request) -> RetrievalState:
    return request.app.state.retrieval


# ---- helpers --------------------------------------------------------------------------------
def _embedding_row(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def _embed(state: RetrievalState, body: EmbeddingRequest) -> dict[str, Any]:
    embedder = state.embedder
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise InvalidInputError("input must hold at least one text")
    limit = state.settings.max_documents_per_request
    if len(texts) > limit:
        raise LimitExceededError(
            f"too many inputs: {len(texts)} > {limit} (max_documents_per_request); "
            "split the request",
            limit_name="max_documents_per_request",
            limit=limit,
            value=len(texts),
        )
    for index, text in enumerate(texts):
        if not text:
            raise InvalidInputError(f"input[{index}] is empty")
    if body.input_type == "query":
        matrix = embedder.embed_queries(
            texts, instruction=body.instruction, dimensions=body.dimensions
        )
    else:
        matrix = embedder.embed_documents(texts, dimensions=body.dimensions)
    tokens = sum(embedder.count_tokens(text) for text in texts)
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": _embedding_row(row, body.encoding_format),
            }
            for i, row in enumerate(matrix)
        ],
        "model": embedder.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _documents(body: DocumentsRequest):
    from finerank.retrieval.chunkers import Document

    documents = []
    for index, item in enumerate(body.documents):
        doc = DocumentIn(text=item) if isinstance(item, str) else item
        if not doc.text.strip():
            raise InvalidInputError(f"documents[{index}] has no text")
        key = doc.id or "sha256:" + hashlib.sha256(doc.text.encode("utf-8")).hexdigest()[:16]
        documents.append(Document(key, doc.text, dict(doc.metadata), f"api:{key}"))
    return documents


# ---- router ---------------------------------------------------------------------------------
def build_router(settings: Settings) -> APIRouter:
    """Routes for embeddings, search and collections; the state loads in the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = RetrievalState(settings)
        app.state.retrieval = state
        await state.start(app)
        try:
            yield
        finally:
            await state.stop()

    router = APIRouter(lifespan=lifespan, tags=["retrieval"])

    @router.post("/v1/embeddings")
    async def embeddings(request: Request, body: EmbeddingRequest) -> dict[str, Any]:
        """OpenAI-compatible embeddings (``input_type``/``instruction`` are extensions)."""
        state = _state(request)
        await state.run(lambda: None)  # waits for the model
        names = {state.embedder.name, settings.embedding_model}
        if body.model and body.model not in names:
            raise UnknownModelError(
                f"embedding model {body.model!r} is not served here; served: "
                f"{state.embedder.name!r}"
            )
        return await state.run(_embed, state, body)

    @router.post("/v1/search")
    async def search(request: Request, body: SearchRequest) -> dict[str, Any]:
        """Recall ``recall_k`` candidates, rerank ``rerank_k`` with the served reranker."""
        from finerank.retrieval.search import apply_rerank, rerank_text

        state = _state(request)
        service = getattr(request.app.state, "service", None)
        rerank = body.rerank and service is not None
        response = await state.run(
            state.search.search,
            body.collection,
            body.query,
            mode=body.mode,
            recall_k=body.recall_k,
            top_n=body.recall_k if rerank else body.top_n,
            filters=body.filters,
            instruction=body.instruction,
            rerank=False,
        )
        if rerank and response.hits:
            # the served reranker batches these pairs with every other request's
            limit = min(body.rerank_k or len(response.hits), len(response.hits))
            texts = [rerank_text(hit) for hit in response.hits[:limit]]
            started = time.perf_counter()
            outcome = await service.rerank(body.query, texts, instruction=body.instruction)
            response.timings_ms["rerank"] = round((time.perf_counter() - started) * 1000, 2)
            response.hits = apply_rerank(response.hits, outcome.results, limit)
            response.reranked = limit
        response.hits = response.hits[: body.top_n]
        return response.to_dict()

    @router.post("/v1/collections/{name}/documents")
    async def add_documents(request: Request, name: str, body: DocumentsRequest) -> dict[str, Any]:
        """Chunk, embed and index documents into ``name`` (created on first use)."""
        from finerank.retrieval.chunkers import get_chunker
        from finerank.retrieval.ingest import ingest_documents

        state = _state(request)
        limit = settings.max_documents_per_request
        if len(body.documents) > limit:
            raise LimitExceededError(
                f"too many documents: {len(body.documents)} > {limit} "
                "(max_documents_per_request); split the request",
                limit_name="max_documents_per_request",
                limit=limit,
                value=len(body.documents),
            )
        chunker = get_chunker(body.chunker, **body.chunker_options)
        documents = _documents(body)
        report = await state.run(
            ingest_documents,
            documents,
            store=state.store,
            collection=name,
            chunker=chunker,
            embedder=state.embedder,
        )
        return {
            "collection": name,
            "documents": report.documents,
            "chunks": report.chunks,
            "added": report.added,
            "deleted": report.deleted,
            "unchanged_documents": report.unchanged_files,
            "seconds": round(report.seconds, 3),
        }

    @router.get("/v1/collections")
    async def list_collections(request: Request) -> dict[str, Any]:
        state = _state(request)
        infos = await state.run(lambda: state.store.list_collections())
        return {"collections": [info.to_dict() for info in infos]}

    @router.get("/v1/collections/{name}")
    async def get_collection(request: Request, name: str) -> dict[str, Any]:
        state = _state(request)
        return (await state.run(lambda: state.store.info(name))).to_dict()

    @router.delete("/v1/collections/{name}")
    async def delete_collection(request: Request, name: str) -> dict[str, Any]:
        state = _state(request)
        await state.run(lambda: state.store.delete(name))
        return {"deleted": name}

    return router
