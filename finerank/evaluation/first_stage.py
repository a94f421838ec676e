"""First-stage retrievers for the evaluation harness.

A first stage indexes a corpus once and returns, per query, up to ``k`` document ids best
first. ``finerank eval`` measures the product, so the stages here run finerank's own
retrieval code wherever it exists.

Example:
    >>> stage = Bm25sFirstStage()
    >>> stage.index({"a": "the wing in a slipstream", "b": "heat conduction in slabs"})
    >>> stage.search({"q": "slipstream wing"}, k=1)
    {'q': [('a', ...)]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from finerank.errors import InvalidInputError

Ranking = list[tuple[str, float]]


class FirstStage(Protocol):
    """What the harness needs from a first stage."""

    name: str

    def index(self, corpus: Mapping[str, str]) -> None: ...

    def search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]: ...


class Bm25sFirstStage:
    """Okapi BM25 (k1=1.5, b=0.75, English stopwords removed) from the ``bm25s`` package."""

    name = "bm25"

    def __init__(self) -> None:
        self._retriever = None
        self._ids: list[str] = []

    def index(self, corpus: Mapping[str, str]) -> None:
        import bm25s

        self._ids = list(corpus)
        retriever = bm25s.BM25()
        tokens = bm25s.tokenize(list(corpus.values()), stopwords="en", show_progress=False)
        retriever.index(tokens, show_progress=False)
        self._retriever = retriever

    def search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        import bm25s

        if self._retriever is None:
            raise RuntimeError("call index(corpus) before search()")
        k = min(k, len(self._ids))
        tokens = bm25s.tokenize(list(queries.values()), stopwords="en", show_progress=False)
        positions, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        return {
            query_id: [
                (self._ids[int(p)], float(s))
                for p, s in zip(positions[row], scores[row], strict=True)
                if float(s) > 0.0  # a zero score means no query term matched
            ]
            for row, query_id in enumerate(queries)
        }


class ProductFirstStage:
    """finerank's own first stage: the corpus goes into an embedded Qdrant collection (in a
    temporary directory, one chunk per document) and queries run through
    :meth:`finerank.retrieval.search.SearchService.recall` in ``bm25``, ``dense`` or
    ``hybrid`` mode, exactly as ``finerank search`` does."""

    COLLECTION = "eval"

    def __init__(self, mode: str = "bm25", *, embedder=None, max_chunk_tokens: int = 100_000):
        if mode in ("dense", "hybrid") and embedder is None:
            raise InvalidInputError(f"--first-stage {mode} needs --embedding-model")
        self.name = mode
        self.mode = mode
        self.embedder = embedder
        self.max_chunk_tokens = max_chunk_tokens
        self._tmp = None
        self._service = None

    def index(self, corpus: Mapping[str, str]) -> None:
        import tempfile

        from finerank.retrieval.chunkers import Document, get_chunker
        from finerank.retrieval.ingest import ingest_documents
        from finerank.retrieval.search import SearchService
        from finerank.retrieval.store import VectorStore

        self.close()
        self._tmp = tempfile.TemporaryDirectory(prefix="finerank-eval-")
        store = VectorStore.open(data_dir=self._tmp.name)
        documents = [
            Document(source=doc_id, text=text, metadata={"doc_id": doc_id}, file=doc_id)
            for doc_id, text in corpus.items()
            if text.strip()
        ]
        ingest_documents(
            documents,
            store=store,
            collection=self.COLLECTION,
            chunker=get_chunker("window", max_tokens=self.max_chunk_tokens),
            embedder=self.embedder,
            batch_size=256,
        )
        self._service = SearchService(store, embedder=self.embedder)

    def search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        if self._service is None:
            raise RuntimeError("call index(corpus) before search()")
        rankings: dict[str, Ranking] = {}
        for query_id, query in queries.items():
            ranking: Ranking = []
            seen: set[str] = set()
            if query.strip():
                for hit in self._service.recall(self.COLLECTION, query, mode=self.mode, recall_k=k):
                    metadata = hit.payload.get("metadata") or {}
                    doc_id = str(metadata.get("doc_id", hit.payload["source"]))
                    if doc_id not in seen:  # a document split into chunks counts once
                        seen.add(doc_id)
                        ranking.append((doc_id, hit.score))
            rankings[query_id] = ranking
        return rankings

    def close(self) -> None:
        """Close the store and delete its temporary directory."""
        if self._service is not None:
            self._service.store.close()
            self._service = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def make_first_stage(mode: str, *, embedder=None) -> FirstStage:
    """The first stage ``finerank eval --first-stage MODE`` runs: finerank's retrieval
    package (:class:`ProductFirstStage`, with ``embedder`` for dense / hybrid); ``bm25s`` BM25
    when that package is not installed."""
    try:
        import finerank.retrieval.search  # noqa: F401
    except ImportError:
        if mode != "bm25":
            raise InvalidInputError(
                f"--first-stage {mode} needs finerank's retrieval extra: "
                "pip install 'finerank[retrieval]'"
            ) from None
        return Bm25sFirstStage()
    return ProductFirstStage(mode, embedder=embedder)
