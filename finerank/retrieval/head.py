"""Rerank the head of a first-stage ranking: the one implementation every path shares.

A first stage returns candidates best first; the reranker reads the first ``rerank_k`` of
them and reorders those by its score, and the rest keep their first-stage order below. The
sync :class:`~finerank.retrieval.search.SearchService` (CLI, Python API), the async
:class:`~finerank.retrieval.service.RetrievalService` (HTTP, web page) and the evaluation
harness all do this through :class:`RerankHead`; only the call to the reranker differs
(direct, or through the batching :class:`~finerank.service.RerankService`).

This module imports nothing heavy, so the evaluation harness can use it without the
retrieval extra.

Example:
    >>> from finerank.engine.engine import ScoreResult
    >>> head = RerankHead(["a", "b", "c"], rerank_k=2, text=str.upper)
    >>> head.texts
    ['A', 'B']
    >>> head.reorder([ScoreResult(index=1, score=0.9, logit=2.2), ScoreResult(0, 0.1, -2.2)])
    ['b', 'a', 'c']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from finerank.errors import InvalidInputError

T = TypeVar("T")


class RankedResult(Protocol):
    """What a reranker returns per document (a :class:`~finerank.ScoreResult`)."""

    index: int
    score: float


class RerankHead(Generic[T]):
    """The first ``rerank_k`` of ``candidates`` (all when ``None``) and what the reranker reads.

    Args:
        candidates: first-stage candidates, best first.
        rerank_k: how many of the first candidates to rerank (``None``: all).
        text: the text the reranker reads for one candidate.
    """

    def __init__(self, candidates: Sequence[T], rerank_k: int | None, text: Callable[[T], str]):
        if rerank_k is not None and (
            isinstance(rerank_k, bool) or not isinstance(rerank_k, int) or rerank_k < 1
        ):
            raise InvalidInputError(f"rerank_k must be a positive integer, got {rerank_k!r}")
        self.candidates = list(candidates)
        self.limit = min(rerank_k or len(self.candidates), len(self.candidates))
        self.texts = [text(candidate) for candidate in self.candidates[: self.limit]]

    def reorder(
        self,
        results: Sequence[RankedResult],
        on_ranked: Callable[[T, int, float], None] | None = None,
    ) -> list[T]:
        """The candidates in final order: the head as ``results`` rank it (best first, each
        ``result.index`` points into :attr:`texts`), then the tail in first-stage order.

        ``on_ranked(candidate, rank, score)`` is called for each reranked candidate (1-based
        rank), e.g. to record both stages' ranks on a search hit.

        Returns:
            A new list; ``candidates`` is not changed.
        """
        if len(results) != self.limit:
            raise ValueError(f"expected {self.limit} reranked results, got {len(results)}")
        ordered = []
        for rank, result in enumerate(results, start=1):
            candidate = self.candidates[result.index]
            if on_ranked is not None:
                on_ranked(candidate, rank, float(result.score))
            ordered.append(candidate)
        return ordered + self.candidates[self.limit :]
