"""What the web page calls: the runtime's rerank and retrieval services, in-process.

The page never calls finerank's HTTP API. It takes the same :class:`~finerank.runtime.Runtime`
as the HTTP app (``finerank serve --ui``) or its own (``finerank ui``): reranking goes through
the runtime's :class:`~finerank.service.RerankService` (page requests share batches with API
requests) and search through its :class:`~finerank.retrieval.service.RetrievalService`.

Example:
    >>> from finerank.runtime import Runtime
    >>> backend = UIBackend(Runtime(Settings()))
    >>> backend.model_status()
    'No model loaded: start with --model PATH (or set FINERANK_MODEL).'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from finerank.errors import InvalidInputError, NotFoundError, ServiceUnavailableError
from finerank.runtime import ComponentState, Runtime
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.engine.engine import ScoreResult
    from finerank.retrieval.search import SearchHit
    from finerank.service import RerankService

NO_MODEL = "No model loaded: start with --model PATH (or set FINERANK_MODEL)."


@dataclass
class SearchOutcome:
    """Both orders of one search: ``first_stage`` (recall order) and ``reranked``."""

    first_stage: list[SearchHit]
    reranked: list[SearchHit]
    candidates: int
    reranked_count: int


class UIBackend:
    """The page's one door to finerank: reranking, collections and two-stage search.

    Args:
        runtime: the (started or starting) runtime whose services the page uses.
    """

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    # ---- model ---------------------------------------------------------------------------
    def model_status(self) -> str:
        """One line about the reranker, for the page header."""
        service = self.runtime.rerank
        name = self.settings.public_model_name
        if service is None:
            return NO_MODEL
        if not service.ready:
            status = next(c for c in self.runtime.status() if c.name == "reranker")
            if status.state is ComponentState.FAILED:
                return f"Model {name} failed to load: {status.error}"
            return f"Model {name} is loading…"
        reranker = service.reranker
        assert reranker is not None
        return (
            f"Model {name} ({reranker.family}) on {reranker.backend.device}, "
            f"max {reranker.max_length} tokens per pair"
        )

    def _require_service(self) -> RerankService:
        if self.runtime.rerank is None:
            raise ServiceUnavailableError(
                "no model loaded: restart with --model PATH (or set FINERANK_MODEL)"
            )
        if not self.runtime.rerank.ready:
            raise ServiceUnavailableError("the model is still loading; try again in a moment")
        return self.runtime.rerank

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
    async def collections(self) -> list[str]:
        """Names of the collections in the store."""
        infos = await self.runtime.require_retrieval().collections()
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
        if not collection:
            raise NotFoundError(
                "no collection: build one with `finerank index --collection NAME FILES...` "
                f"(into {self.store_location()})"
            )
        if not query.strip():
            raise InvalidInputError("the query is empty: type a question")
        self._require_service()
        response = await self.runtime.require_retrieval().search(
            collection,
            query,
            mode=mode,  # type: ignore[arg-type]
            recall_k=recall_k,
            top_n=recall_k,
            instruction=instruction or None,
        )
        reranked = response.hits
        first_stage = sorted(reranked, key=lambda hit: hit.first_stage_rank)
        return SearchOutcome(
            first_stage[:top_n], reranked[:top_n], response.candidates, response.reranked
        )

    def store_location(self) -> str:
        """Where the page's collections live, as ``finerank index`` flags would name it."""
        s = self.settings
        if s.qdrant_url:
            return f"--qdrant-url {s.qdrant_url}"
        if s.data_dir:
            return f"--data-dir {s.data_dir}"
        return "the default data directory"
