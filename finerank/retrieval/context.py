"""Document context: a chunk's first-stage score raised by the evidence of its whole document.

A statute article (or any chunk) is short, and a colloquial question shares few words with it;
the law it belongs to shares many more with the question, spread over its other articles. So
the first stage searches ``depth`` chunks deep, scales every score by the best one, sums the
scaled scores of each document's chunks in that pass (the document's evidence, scaled by the
best document's), and ranks chunks by

    score / best_score + weight * document_evidence / best_document_evidence

(reported in the first stage's units: times ``best_score / (1 + weight)``), keeping the first
``limit``. A document is the ``file`` a chunk came from (a law, a contract, a manual: the unit
``finerank index`` replaces). Where every document is one chunk the order cannot change (each
chunk's evidence is its own score), so collections of short documents rank as before.
:class:`~finerank.retrieval.search.SearchService` applies it in the ``bm25`` modes.

Measured on STARD (1,235 layperson questions over 10,414 statute articles of 126 laws), BM25:
NDCG@10 0.411 -> 0.431, Recall@100 0.736 -> 0.760 at the defaults (weight 0.2, depth 1,000;
depth 2,000: 0.435 / 0.763 for twice the first-pass cost). See docs/evaluation.md for the
sweep and what else was tried.

Example:
    >>> from finerank.retrieval.store import StoredHit
    >>> hits = [StoredHit(1, 4.0, "a1", {"file": "a"}), StoredHit(2, 3.0, "b1", {"file": "b"}),
    ...         StoredHit(3, 2.5, "b2", {"file": "b"}), StoredHit(4, 2.0, "b3", {"file": "b"})]
    >>> [(h.chunk_id, h.rank, round(h.score, 3))
    ...  for h in with_document_context(hits, weight=1.0, limit=3)]
    [('b1', 1, 3.5), ('b2', 2, 3.25), ('a1', 3, 3.067)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from finerank.errors import InvalidInputError
from finerank.retrieval.store import StoredHit


@dataclass(frozen=True)
class DocumentContext:
    """How much a chunk's document counts (``weight``; 0 = off) and how deep the first pass
    looks for the document's other chunks (``depth`` chunks, at least the ``recall_k`` asked)."""

    weight: float = 0.2
    depth: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not 0.0 <= self.weight <= 10.0:
            raise InvalidInputError(
                f"document context weight must be within [0, 10], got {self.weight!r}"
            )
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise InvalidInputError(
                f"document context depth must be a positive integer, got {self.depth!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def pass_limit(self, recall_k: int) -> int:
        """How many chunks the first pass fetches for ``recall_k`` final ones."""
        return max(recall_k, self.depth) if self.enabled else recall_k

    @classmethod
    def from_settings(cls, settings) -> DocumentContext:
        """``document_weight`` and ``document_depth`` of :class:`finerank.settings.Settings`."""
        return cls(weight=settings.document_weight, depth=settings.document_depth)


def with_document_context(
    hits: Sequence[StoredHit], *, weight: float, limit: int
) -> list[StoredHit]:
    """``hits`` (one first pass, best first) re-ranked with their documents' evidence (see
    the module docstring), the first ``limit`` of them, ranks renumbered. Scores stay in the
    first stage's units: ``(score + weight * best_score * evidence / best_evidence) / (1 +
    weight)``, so a chunk that is its document's only hit in the pass keeps its score, and
    when no document has two hits nothing changes at all."""
    best = hits[0].score if hits else 0.0
    documents = [_document(hit) for hit in hits]
    if weight <= 0 or best <= 0 or len(set(documents)) == len(documents):
        return [replace(hit, rank=rank) for rank, hit in enumerate(hits[:limit], start=1)]
    evidence: dict[str, float] = {}
    for hit, document in zip(hits, documents, strict=True):
        evidence[document] = evidence.get(document, 0.0) + max(hit.score, 0.0)
    top_evidence = max(evidence.values())
    lift = weight * best / top_evidence
    combined = [
        (hit.score + lift * evidence[document]) / (1 + weight) if hit.score > 0 else hit.score
        for hit, document in zip(hits, documents, strict=True)
    ]
    # stable: equal combined scores keep the first pass's order
    order = sorted(range(len(hits)), key=lambda i: -combined[i])[:limit]
    return [replace(hits[i], rank=rank, score=combined[i]) for rank, i in enumerate(order, start=1)]


def _document(hit: StoredHit) -> str:
    payload = hit.payload
    return str(payload.get("file") or payload.get("source") or hit.chunk_id)
