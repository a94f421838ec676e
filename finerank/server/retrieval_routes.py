"""HTTP routes of two-stage retrieval, mounted by ``create_app`` whenever a store is configured.

- ``POST /v1/embeddings``: OpenAI format (``input`` string or list, ``model``, ``dimensions``,
  ``encoding_format`` float|base64, ``usage``). finerank extensions: ``input_type``
  (``document`` default, or ``query``) and ``instruction`` (query prompt of Qwen3 models).
  Batched across requests like rerank (``EmbeddingService``); TEI's timing headers
  (``x-tokenization-time``, ``x-queue-time``, ``x-inference-time``, ``x-total-time``, ms).
- ``POST /v1/search``: first stage (bm25 | dense | hybrid | bm25+prf | hybrid+prf) then the
  server's reranker. The BM25 modes work without an embedding model; the others then say
  they need one.
- ``POST /v1/collections/{name}/documents``: chunk, embed and index documents (idempotent:
  a document id re-posted with the same text adds nothing; with new text, replaces its chunks).
- ``GET /v1/collections``, ``GET /v1/collections/{name}``, ``DELETE /v1/collections/{name}``.

The routers are thin: bodies are read as JSON whatever the Content-Type
(:func:`~finerank.server.routing.parse_body`), the work is done by the runtime's services, and
a request that arrives before every component is loaded gets a 503 naming the one still
loading.

Example:
    >>> from finerank.runtime import Runtime
    >>> from finerank.settings import Settings
    >>> router = build_router(Runtime(Settings(data_dir="/tmp/finerank-doc")))
    >>> sorted({r.path for r in router.routes})[:2]
    ['/v1/collections', '/v1/collections/{name}']
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from finerank.errors import InvalidInputError
from finerank.runtime import Runtime
from finerank.server.routing import json_body, json_response, parse_body, timing_headers
from finerank.server.schemas import (
    CollectionList,
    CollectionOut,
    Deleted,
    DocumentsRequest,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    IngestDocument,
    IngestResponse,
    SearchRequest,
    SearchResponseOut,
    Usage,
)


def _embedding_row(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def _documents(body: DocumentsRequest):
    from finerank.retrieval.chunkers import Document

    documents = []
    for index, item in enumerate(body.documents):
        doc = IngestDocument(text=item) if isinstance(item, str) else item
        if not doc.text.strip():
            raise InvalidInputError(f"documents[{index}] has no text")
        key = doc.id or "sha256:" + hashlib.sha256(doc.text.encode("utf-8")).hexdigest()[:16]
        documents.append(Document(key, doc.text, dict(doc.metadata), f"api:{key}"))
    return documents


def _collection(info) -> CollectionOut:
    return CollectionOut.model_validate(info.to_dict())


def build_router(runtime: Runtime) -> APIRouter:
    """Routes for embeddings, search and collections over ``runtime``'s services."""
    router = APIRouter(tags=["retrieval"])

    @router.post("/v1/embeddings", response_model=EmbeddingResponse, **json_body(EmbeddingRequest))
    async def embeddings(request: Request) -> Response:
        """OpenAI-compatible embeddings (``input_type``/``instruction`` are extensions)."""
        body = await parse_body(request, EmbeddingRequest)
        service = runtime.require_embeddings()
        service.check_model(body.model)
        outcome = await service.embed(
            body.input,
            input_type=body.input_type,
            instruction=body.instruction,
            dimensions=body.dimensions,
        )
        data = [
            EmbeddingData(index=i, embedding=_embedding_row(row, body.encoding_format))
            for i, row in enumerate(outcome.vectors)
        ]
        tokens = outcome.prompt_tokens
        usage = Usage(prompt_tokens=tokens, total_tokens=tokens)
        return json_response(
            EmbeddingResponse(data=data, model=service.name, usage=usage),
            headers=timing_headers(outcome.timings),
        )

    @router.post("/v1/search", response_model=SearchResponseOut, **json_body(SearchRequest))
    async def search(request: Request) -> Response:
        """Recall ``recall_k`` candidates, rerank ``rerank_k`` with the served reranker."""
        body = await parse_body(request, SearchRequest)
        response = await runtime.require_retrieval().search(
            body.collection,
            body.query,
            mode=body.mode,
            recall_k=body.recall_k,
            rerank_k=body.rerank_k,
            top_n=body.top_n,
            filters=body.filters,
            instruction=body.instruction,
            rerank=body.rerank,
        )
        out = SearchResponseOut.model_validate(response.to_dict())
        return json_response(out, exclude_none=False)

    @router.post(
        "/v1/collections/{name}/documents",
        response_model=IngestResponse,
        **json_body(DocumentsRequest),
    )
    async def add_documents(request: Request, name: str) -> Response:
        """Chunk, embed and index documents into ``name`` (created on first use)."""
        from finerank.retrieval.chunkers import get_chunker

        body = await parse_body(request, DocumentsRequest)
        retrieval = runtime.require_retrieval()
        chunker = get_chunker(body.chunker, **body.chunker_options)
        report = await retrieval.add_documents(name, _documents(body), chunker)
        return json_response(
            IngestResponse(
                collection=name,
                documents=report.documents,
                chunks=report.chunks,
                added=report.added,
                deleted=report.deleted,
                unchanged_documents=report.unchanged_files,
                seconds=round(report.seconds, 3),
            )
        )

    @router.get("/v1/collections", response_model=CollectionList)
    async def list_collections() -> Response:
        infos = await runtime.require_retrieval().collections()
        return json_response(
            CollectionList(collections=[_collection(info) for info in infos]), exclude_none=False
        )

    @router.get("/v1/collections/{name}", response_model=CollectionOut)
    async def get_collection(name: str) -> Response:
        info = await runtime.require_retrieval().info(name)
        return json_response(_collection(info), exclude_none=False)

    @router.delete("/v1/collections/{name}", response_model=Deleted)
    async def delete_collection(name: str) -> Response:
        await runtime.require_retrieval().delete(name)
        return json_response(Deleted(deleted=name))

    return router
