"""The async retrieval service: the store, recall, and the reranked head, for many callers.

The HTTP routes and the web page search, ingest and list collections through one
:class:`RetrievalService`. It owns the store and the one thread every store call runs on
(embedded Qdrant is not safe to call from several threads at once), and it uses two batching
services: query and chunk embeddings go through the
:class:`~finerank.retrieval.embedding_service.EmbeddingService` (shared forward passes with
``/v1/embeddings``), and the head of every search is reranked through the
:class:`~finerank.service.RerankService` (shared forward passes with ``/v1/rerank``), with the
same :class:`~finerank.retrieval.head.RerankHead` as the synchronous
:class:`~finerank.retrieval.search.SearchService`. The store thread only ever does store
work: chunking runs on its own thread and embeddings on the embedding worker, so a big ingest
or a huge embedding request does not stall searches.

Per-request limits (``Settings``): ``max_query_chars``, ``max_recall_k``, ``max_rerank_k``
(and the reranker's ``max_documents_per_request``; a search without ``rerank_k`` reranks all
its candidates up to that limit), ``max_documents_per_request`` documents and
``max_chunks_per_request`` chunks per ingest request; each has its own message.

Example:
    >>> response = await runtime.retrieval.search("laws", "罚款多少？", mode="bm25")
    ... # doctest: +SKIP
    >>> [(h.first_stage_rank, h.rerank_rank) for h in response.hits][:2]  # doctest: +SKIP
    [(3, 1), (1, 2)]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from finerank.errors import LimitExceededError, ServiceUnavailableError
from finerank.retrieval.head import RerankHead
from finerank.retrieval.search import (
    SearchResponse,
    SearchService,
    check_mode,
    check_positive,
    check_query,
    check_query_embedder,
    mark_reranked,
    needs_dense,
    rerank_text,
    to_hit,
)
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.retrieval.chunkers import Chunker, Document
    from finerank.retrieval.embedding_service import EmbeddingService
    from finerank.retrieval.ingest import IngestReport
    from finerank.retrieval.search import SearchMode
    from finerank.retrieval.store import CollectionInfo, VectorStore
    from finerank.service import RerankService

T = TypeVar("T")
INGEST_BATCH = 64  # chunks embedded and written at once
DEFAULT_RECALL_K = 100  # first-stage candidates of a search that does not say


class RetrievalService:
    """Search, ingest and collections over one store, for concurrent callers.

    Args:
        settings: the per-request limits.
        rerank: the batching rerank service (``None``: first stage only).
        embeddings: the batching embedding service (``None``: BM25 only; dense and hybrid
            searches then say they need an embedding model).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        rerank: RerankService | None = None,
        embeddings: EmbeddingService | None = None,
    ):
        self.settings = settings or Settings()
        self.rerank = rerank
        self.embeddings = embeddings
        self.store: VectorStore | None = None
        self.owns_store = False
        self._store_thread: ThreadPoolExecutor | None = None
        self._chunk_thread: ThreadPoolExecutor | None = None
        self._accepting = False

    # ---- lifecycle -------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        if self._store_thread is None:
            self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="finerank-store")
        return self._store_thread

    def open_store(self, opener: Callable[[], VectorStore]) -> VectorStore:
        """Open the store on the store thread (blocking); it is closed by :meth:`stop`."""
        self.store = self._executor().submit(opener).result()
        self.owns_store = True
        return self.store

    def start(self, store: VectorStore | None = None) -> None:
        """Accept requests on ``store`` (or the one :meth:`open_store` opened)."""
        self.store = store or self.store
        if self.store is None:
            raise ServiceUnavailableError("no store opened")
        self._executor()
        if self._chunk_thread is None:
            self._chunk_thread = ThreadPoolExecutor(1, thread_name_prefix="finerank-chunk")
        self._accepting = True

    @property
    def ready(self) -> bool:
        return self._accepting

    def stop(self) -> None:
        """Stop accepting; close the store (when opened here) on its thread. Idempotent."""
        self._accepting = False
        if self._store_thread is not None:
            if self.owns_store and self.store is not None:
                self._store_thread.submit(self.store.close).result()
                self.owns_store = False
            self._store_thread.shutdown(wait=True)
            self._store_thread = None
        if self._chunk_thread is not None:
            self._chunk_thread.shutdown(wait=True)
            self._chunk_thread = None

    async def _on_store(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self._accepting or self._store_thread is None:
            raise ServiceUnavailableError("the store is not open yet (or shutting down); retry")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store_thread, lambda: func(*args, **kwargs))

    def _store(self) -> VectorStore:
        assert self.store is not None
        return self.store

    def _embedder(self) -> EmbeddingService | None:
        return self.embeddings if self.embeddings is not None and self.embeddings.ready else None

    # ---- limits ----------------------------------------------------------------------------
    @property
    def rerank_limit(self) -> int:
        """Most candidates one search reranks: ``max_rerank_k``, and the reranker's own
        ``max_documents_per_request``."""
        s = self.settings
        return min(s.max_rerank_k, s.max_documents_per_request)

    def check_search_limits(self, query: str, recall_k: int, rerank_k: int | None) -> None:
        """Raise :class:`LimitExceededError` (413) for a search over a per-request limit.

        Example:
            >>> RetrievalService(Settings(max_recall_k=1000)).check_search_limits("q", 1500, 10)
            Traceback (most recent call last):
            ...
            finerank.errors.LimitExceededError: recall_k=1500 > max_recall_k=1000: ask for fewer first-stage candidates
        """  # noqa: E501
        s = self.settings
        if len(query) > s.max_query_chars:
            raise LimitExceededError(
                f"query too long: {len(query)} characters > max_query_chars="
                f"{s.max_query_chars}; send a shorter query",
                limit_name="max_query_chars",
                limit=s.max_query_chars,
                value=len(query),
            )
        if recall_k > s.max_recall_k:
            raise LimitExceededError(
                f"recall_k={recall_k} > max_recall_k={s.max_recall_k}: ask for fewer "
                "first-stage candidates",
                limit_name="max_recall_k",
                limit=s.max_recall_k,
                value=recall_k,
            )
        if rerank_k is not None and rerank_k > self.rerank_limit:
            name = (
                "max_rerank_k"
                if s.max_rerank_k <= s.max_documents_per_request
                else "max_documents_per_request"
            )
            raise LimitExceededError(
                f"rerank_k={rerank_k} > {name}={self.rerank_limit}: rerank fewer candidates",
                limit_name=name,
                limit=self.rerank_limit,
                value=rerank_k,
            )

    # ---- search ----------------------------------------------------------------------------
    async def search(
        self,
        collection: str,
        query: str,
        *,
        mode: SearchMode = "hybrid",
        recall_k: int | None = None,
        rerank_k: int | None = None,
        top_n: int = 10,
        filters: Mapping[str, Any] | None = None,
        instruction: str | None = None,
        rerank: bool = True,
    ) -> SearchResponse:
        """Recall ``recall_k`` candidates, rerank the first ``rerank_k`` (default: all) with
        the rerank service, return ``top_n`` hits; the same answer as
        :meth:`SearchService.search` with the same models.

        Args:
            collection: the collection to search.
            query: the query (at most ``max_query_chars`` characters).
            mode: ``bm25``, ``dense``, ``hybrid``, ``bm25+prf`` or ``hybrid+prf`` (those with
                a dense branch need an embedding model).
            recall_k: first-stage candidates (default: :data:`DEFAULT_RECALL_K`, at most
                ``max_recall_k``).
            rerank_k: candidates reranked (default: all, up to :attr:`rerank_limit`; more
                than that is a 413).
            top_n: hits returned.
            filters: payload filters (see :func:`finerank.retrieval.store.build_filter`).
            instruction: reranker instruction, also used in Qwen3 query embeddings.
            rerank: ``False`` returns the first stage as is.

        Returns:
            A :class:`~finerank.retrieval.search.SearchResponse` (hits with both ranks).
        """
        check_query(query)
        check_mode(mode)
        check_positive("recall_k", recall_k)
        recall_k = recall_k or min(DEFAULT_RECALL_K, self.settings.max_recall_k)
        check_positive("rerank_k", rerank_k)
        check_positive("top_n", top_n)
        rerank = rerank and self.rerank is not None
        self.check_search_limits(query, recall_k, rerank_k if rerank else None)
        started = time.perf_counter()
        store = self._store()
        spec = await self._on_store(store.spec, collection)
        vector = None
        if needs_dense(mode):
            embeddings = self._embedder()
            check_query_embedder(collection, spec, embeddings)
            assert embeddings is not None
            outcome = await embeddings.embed(
                [query], input_type="query", instruction=instruction, check_limits=False
            )
            vector = outcome.vectors[0]
        # the sync service's first stage (fusion and feedback settings, analyzer check), on
        # the store thread, with the query vector computed above
        first_stage = SearchService.from_settings(self.settings, store)
        stored = (
            await self._on_store(
                first_stage.recall_batch,
                collection,
                [query],
                mode=mode,
                recall_k=recall_k,
                filters=filters,
                dense=None if vector is None else [vector],
            )
        )[0]
        recalled = time.perf_counter()
        hits = [to_hit(hit) for hit in stored]
        reranked = 0
        if rerank and hits:
            # default: every candidate, up to the server's rerank limit
            head = RerankHead(hits, rerank_k or self.rerank_limit, rerank_text)
            results = await self._rerank(query, head.texts, instruction, rerank_k)
            hits = head.reorder(results, mark_reranked)
            reranked = head.limit
        return SearchResponse.build(
            query, collection, mode, hits[:top_n], len(stored), reranked, started, recalled
        )

    async def _rerank(
        self, query: str, texts: list[str], instruction: str | None, rerank_k: int | None
    ) -> Sequence[Any]:
        assert self.rerank is not None
        try:
            outcome = await self.rerank.rerank(query, texts, instruction=instruction)
        except LimitExceededError as exc:
            if exc.limit_name != "max_tokens_per_request":
                raise
            raise LimitExceededError(
                f"the {len(texts)} candidates to rerank hold {exc.value} tokens > "
                f"max_tokens_per_request={exc.limit}: set a smaller rerank_k",
                limit_name=exc.limit_name,
                limit=exc.limit,
                value=exc.value,
            ) from None
        return outcome.results

    # ---- ingest and collections ------------------------------------------------------------
    async def add_documents(
        self, collection: str, documents: Sequence[Document], chunker: Chunker
    ) -> IngestReport:
        """Chunk, embed and index ``documents`` into ``collection`` (created on first use);
        idempotent like :func:`finerank.retrieval.ingest.ingest_documents`, and the store
        thread only does the store work (chunking and embedding run elsewhere)."""
        from finerank.retrieval.bm25_pool import term_counts
        from finerank.retrieval.ingest import (
            build_points,
            check_chunk_limit,
            chunk_documents,
            finish_ingest,
            plan_ingest,
        )
        from finerank.retrieval.storage import MIB, check_free_space, storage_errors

        s = self.settings
        if len(documents) > s.max_documents_per_request:
            raise LimitExceededError(
                f"too many documents: {len(documents)} > max_documents_per_request="
                f"{s.max_documents_per_request}; split the request",
                limit_name="max_documents_per_request",
                limit=s.max_documents_per_request,
                value=len(documents),
            )
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        assert self._chunk_thread is not None
        chunked = await loop.run_in_executor(
            self._chunk_thread, lambda: chunk_documents(documents, chunker)
        )
        check_chunk_limit(chunked, s.max_chunks_per_request)
        embeddings = self._embedder()
        store = self._store()
        # BM25 analysis (jieba) on the chunking thread, in this process: a server must not
        # fork (its threads hold locks); the store thread then only does store work
        records = [record for rs in chunked.by_file.values() for record in rs]
        analyzed = await loop.run_in_executor(
            self._chunk_thread,
            lambda: term_counts([record.indexed_text for record in records], workers=1),
        )
        min_free = s.min_free_disk_mb * MIB

        def on_store_writing(func, *args):
            """A store write on the store thread: enough disk first, a full one is a 507."""

            def write():
                check_free_space(store, min_free)
                with storage_errors(store):
                    return func(*args)

            return self._on_store(write)

        plan = await on_store_writing(
            lambda: plan_ingest(
                store, collection, chunked, chunker, embeddings, workers=1, analyzed=analyzed
            )
        )
        encoder = plan.encoder
        for batch, counts in plan.batches(INGEST_BATCH):
            points = await loop.run_in_executor(
                self._chunk_thread,
                lambda batch=batch, counts=counts: build_points(batch, encoder, None, counts),
            )
            if embeddings is not None:
                texts = [record.indexed_text for record in batch]
                outcome = await embeddings.embed(texts, check_limits=False)
                for point, vector in zip(points, outcome.vectors, strict=True):
                    point.dense = vector
            plan.report.added += await on_store_writing(store.upsert, collection, points)
        plan.report.deleted = await on_store_writing(store.delete_chunks, collection, plan.stale)
        # the plan analyzes with workers=1 (a server must not fork, see above)
        await on_store_writing(finish_ingest, store, collection, plan)
        plan.report.seconds = time.perf_counter() - started
        return plan.report

    async def collections(self) -> list[CollectionInfo]:
        """Every finerank collection in the store, by name."""
        return await self._on_store(self._store().list_collections)

    async def info(self, name: str) -> CollectionInfo:
        """One collection's spec and size (:class:`~finerank.errors.NotFoundError` if none)."""
        return await self._on_store(self._store().info, name)

    async def delete(self, name: str) -> None:
        """Delete a collection and its chunks."""
        await self._on_store(self._store().delete, name)
