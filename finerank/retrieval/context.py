"""Document context: a chunk's first-stage score raised by the evidence of its whole document.

A statute article (or any chunk) is short, and a colloquial question shares few words with it;
the law it belongs to shares many more with the question, spread over its other articles. Two
kinds of evidence say so:

- *in the pass*: the first stage searches ``depth`` chunks deep, scales every score by the
  best one and sums the scaled scores of each document's chunks in that pass (the document's
  evidence, scaled by the best document's), weight ``weight``;
- *the document index* (:mod:`finerank.retrieval.documents`): the document's own BM25 score
  for the query, all its chunks taken as one text, IDF over documents (scaled by the best
  document's), weight ``index_weight``. A document of one chunk counts its chunk's own scaled
  score here (the chunk is the document).

Chunks are ranked by

    score / best_score + weight * evidence / best_evidence + index_weight * document / best_document

(reported in the first stage's units: times ``best_score / (1 + weight + index_weight)``),
keeping the first ``limit``. A document is the ``file`` a chunk came from (a law, a contract,
a manual: the unit ``finerank index`` replaces). Where no two chunks of the pass share a
document the order cannot change (each chunk's evidence is its own score), so nothing is
changed at all and collections of short documents rank as before.
:class:`~finerank.retrieval.search.SearchService` applies it in the ``bm25`` modes.

Measured on STARD (1,235 layperson questions over 10,414 statute articles of 126 laws), BM25:
NDCG@10 0.411 -> 0.431, Recall@100 0.736 -> 0.760 with the pass evidence at its defaults
(weight 0.2, depth 1,000), and -> 0.439 / 0.781 with the document index at weight 0.4 on
top. See docs/evaluation.md for the sweeps and what else was tried.

Example:
    >>> from finerank.retrieval.store import StoredHit
    >>> hits = [StoredHit(1, 4.0, "a1", {"file": "a"}), StoredHit(2, 3.0, "b1", {"file": "b"}),
    ...         StoredHit(3, 2.5, "b2", {"file": "b"}), StoredHit(4, 2.0, "b3", {"file": "b"})]
    >>> [(h.chunk_id, h.rank, round(h.score, 3))
    ...  for h in with_document_context(hits, weight=1.0, limit=3)]
    [('b1', 1, 3.5), ('b2', 2, 3.25), ('a1', 3, 3.067)]
    >>> from finerank.retrieval.store.base import DocumentScore
    >>> index = {"a": DocumentScore(9.0, 5), "b": DocumentScore(3.0, 3)}
    >>> [(h.chunk_id, round(h.score, 3)) for h in with_document_context(
    ...     hits, weight=0.0, limit=3, documents=index, index_weight=1.0)]
    [('a1', 4.0), ('b1', 2.167), ('b2', 1.917)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from finerank.errors import InvalidInputError
from finerank.retrieval.store import StoredHit
from finerank.retrieval.store.base import DocumentScore


@dataclass(frozen=True)
class DocumentContext:
    """How much a chunk's document counts: its other chunks in the first pass (``weight``;
    0 = off), and its score in the document index (``index_weight``; 0 = off); how deep the
    first pass looks for the document's other chunks (``depth`` chunks, at least the
    ``recall_k`` asked; also how many documents the index returns)."""

    weight: float = 0.2
    depth: int = 1000
    index_weight: float = 0.4

    def __post_init__(self) -> None:
        for label, value in (("weight", self.weight), ("index weight", self.index_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInputError(f"document context {label} must be a number, got {value!r}")
            if not 0.0 <= value <= 10.0:
                raise InvalidInputError(
                    f"document context {label} must be within [0, 10], got {value!r}"
                )
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise InvalidInputError(
                f"document context depth must be a positive integer, got {self.depth!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.weight > 0 or self.index_weight > 0

    def pass_limit(self, recall_k: int) -> int:
        """How many chunks the first pass fetches for ``recall_k`` final ones."""
        return max(recall_k, self.depth) if self.enabled else recall_k

    @classmethod
    def from_settings(cls, settings) -> DocumentContext:
        """``document_weight``, ``document_depth`` and ``document_index_weight`` of
        :class:`finerank.settings.Settings`."""
        return cls(
            weight=settings.document_weight,
            depth=settings.document_depth,
            index_weight=settings.document_index_weight,
        )


def with_document_context(
    hits: Sequence[StoredHit],
    *,
    weight: float,
    limit: int,
    documents: Mapping[str, DocumentScore] | None = None,
    index_weight: float = 0.0,
) -> list[StoredHit]:
    """``hits`` (one first pass, best first) re-ranked with their documents' evidence (see
    the module docstring), the first ``limit`` of them, ranks renumbered. ``documents``: the
    query's best documents in the document index (``file ->``
    :class:`~finerank.retrieval.store.base.DocumentScore`; a chunk whose document is not
    among them gets nothing from it). Scores stay in the first stage's units: ``(score +
    weight * best_score * evidence / best_evidence + index_weight * best_score * document /
    best_document) / (1 + weight + index_weight)``, so when no document has two hits in the
    pass nothing changes at all."""
    best = hits[0].score if hits else 0.0
    names = [_document(hit) for hit in hits]
    index_weight = index_weight if documents else 0.0
    if (weight <= 0 and index_weight <= 0) or best <= 0 or len(set(names)) == len(names):
        return [replace(hit, rank=rank) for rank, hit in enumerate(hits[:limit], start=1)]
    evidence: dict[str, float] = {}
    for hit, document in zip(hits, names, strict=True):
        evidence[document] = evidence.get(document, 0.0) + max(hit.score, 0.0)
    top_evidence = max(evidence.values())
    top_document = max((d.score for d in (documents or {}).values()), default=0.0)
    combined = []
    for hit, document in zip(hits, names, strict=True):
        if hit.score <= 0:
            combined.append(hit.score)
            continue
        lift = weight * best * evidence[document] / top_evidence
        if index_weight > 0:
            found = documents.get(document)  # index_weight > 0: documents given
            if found is not None and found.chunks == 1:  # the chunk is the document
                lift += index_weight * hit.score
            elif found is not None and top_document > 0:
                lift += index_weight * best * found.score / top_document
        combined.append((hit.score + lift) / (1 + weight + index_weight))
    # stable: equal combined scores keep the first pass's order
    order = sorted(range(len(hits)), key=lambda i: -combined[i])[:limit]
    return [replace(hits[i], rank=rank, score=combined[i]) for rank, i in enumerate(order, start=1)]


def _document(hit: StoredHit) -> str:
    payload = hit.payload
    return str(payload.get("file") or payload.get("source") or hit.chunk_id)
