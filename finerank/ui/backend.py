"""What the web page calls: the in-process rerank service and the retrieval store.

The page never calls finerank's HTTP API. Reranking goes through the same
:class:`~finerank.service.RerankService` the server uses (so page requests share batches with
API requests); search goes through the host app's retrieval state when the server has one
(``finerank serve --embedding-model``), else through a store opened here from the settings.

Example:
    >>> backend = UIBackend(None, Settings())
    >>> backend.model_status()
    'No model loaded: start with --model PATH (or set FINERANK_MODEL).'
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from finerank.errors import InvalidInputError, NotFoundError, ServiceUnavailableError
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.engine.engine import ScoreResult
    from finerank.retrieval.search import SearchHit
    from finerank.service import RerankService

T = TypeVar("T")


class _OwnRetrieval:
    """The store and search service of a page whose host app has no retrieval state.

    Opened on first use (embedded Qdrant locks its directory, so a page that never searches
    never takes the lock). Runs everything on one thread, like the server's retrieval state.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.search = None
        self.store = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="finerank-ui-retrieval")
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self.search is not None:
                return
            from finerank.retrieval.search import SearchService
            from finerank.retrieval.store import VectorStore

            embedder = None
            s = self.settings
            if s.embedding_model:
                from finerank.retrieval.embedder import Embedder

                embedder = Embedder.from_pretrained(s.embedding_model, device=s.device)
            self.store = VectorStore.from_settings(s)
            self.search = SearchService.from_settings(s, self.store, embedder=embedder)

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)
        return await loop.run_in_executor(self._executor, lambda: func(*args, **kwargs))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self._executor.shutdown(wait=False)


@dataclass
class SearchOutcome:
    """Both orders of one search: ``first_stage`` (recall order) and ``reranked``."""

    first_stage: list[SearchHit]
    reranked: list[SearchHit]
    candidates: int
    reranked_count: int


class UIBackend:
    """The page's one door to finerank: reranking, collections and two-stage search.

    ``service`` is the host's started (or starting) :class:`RerankService`, or ``None`` when
    no model was given. ``retrieval`` returns the host app's retrieval state (an object with
    ``search``, ``store`` and ``async run(func)``) or ``None``.
    """

    def __init__(
        self,
        service: RerankService | None,
        settings: Settings,
        *,
        retrieval: Callable[[], Any] | None = None,
    ):
        self.service = service
        self.settings = settings
        self._host_retrieval = retrieval
        self._own: _OwnRetrieval | None = None

    # ---- model ---------------------------------------------------------------------------
    def model_status(self) -> str:
        """One line about the reranker, for the page header."""
        if self.service is None:
            return "No model loaded: start with --model PATH (or set FINERANK_MODEL)."
        if not self.service.ready:
            return f"Model {self.settings.public_model_name} is loading…"
        reranker = self.service.reranker
        assert reranker is not None
        return (
            f"Model {self.settings.public_model_name} ({reranker.family}) on "
            f"{reranker.backend.device}, max {reranker.max_length} tokens per pair"
        )

    def _require_service(self) -> RerankService:
        if self.service is None:
            raise ServiceUnavailableError(
                "no model loaded: restart with --model PATH (or set FINERANK_MODEL)"
            )
        if not self.service.ready:
            raise ServiceUnavailableError("the model is still loading; try again in a moment")
        return self.service

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None,
        top_n: int | None,
        long_document: str,
    ) -> list[ScoreResult]:
        """Ranked results (best first) with their documents, through the service."""
        if not query.strip():
            raise InvalidInputError("the query is empty: type a question")
        if not documents:
            raise InvalidInputError("no documents: enter one per line or upload a .txt/.jsonl")
        # the service enforces max_documents_per_request and the token limit
        outcome = await self._require_service().rerank(
            query,
            documents,
            instruction=instruction or None,
            top_n=top_n,
            return_documents=True,
            long_document=long_document,
        )
        return outcome.results

    # ---- retrieval -----------------------------------------------------------------------
    def _retrieval(self):
        host = self._host_retrieval() if self._host_retrieval is not None else None
        if host is not None:
            return host
        if self._own is None:
            self._own = _OwnRetrieval(self.settings)
        return self._own

    async def collections(self) -> list[str]:
        """Names of the collections in the store ([] when retrieval is not installed)."""
        try:
            import finerank.retrieval.store  # noqa: F401
        except ImportError:
            return []
        state = self._retrieval()
        infos = await state.run(lambda: state.store.list_collections())
        return [info.name for info in infos]

    async def search(
        self,
        collection: str,
        query: str,
        *,
        instruction: str | None,
        mode: str,
        recall_k: int,
        top_n: int,
    ) -> SearchOutcome:
        """First stage (``recall_k`` candidates), then all of them reranked by the service."""
        from finerank.retrieval.search import apply_rerank, rerank_text

        if not collection:
            raise NotFoundError(
                "no collection: build one with `finerank index --collection NAME FILES...`"
            )
        if not query.strip():
            raise InvalidInputError("the query is empty: type a question")
        service = self._require_service()
        state = self._retrieval()
        response = await state.run(
            lambda: state.search.search(
                collection,
                query,
                mode=mode,
                recall_k=recall_k,
                top_n=recall_k,
                instruction=instruction or None,
                rerank=False,
            )
        )
        first_stage = list(response.hits)
        reranked = list(first_stage)
        if first_stage:
            texts = [rerank_text(hit) for hit in first_stage]
            outcome = await service.rerank(query, texts, instruction=instruction or None)
            reranked = apply_rerank(list(first_stage), outcome.results, len(first_stage))
        return SearchOutcome(
            first_stage[:top_n], reranked[:top_n], len(first_stage), len(first_stage)
        )

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None
