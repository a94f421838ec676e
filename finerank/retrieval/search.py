"""Two-stage search: first-stage recall (BM25, dense, hybrid, optionally with pseudo-relevance
feedback) then reranking.

The synchronous form (CLI, Python API, evaluation). Servers use the async
:class:`~finerank.retrieval.service.RetrievalService`, which runs this service's first stage
on its store thread (with the query embedding computed by the batching embedding service) and
reranks the head, like :meth:`SearchService.search`, with
:class:`~finerank.retrieval.head.RerankHead`.

Example:
    >>> from finerank.retrieval.chunkers import Document, get_chunker
    >>> from finerank.retrieval.ingest import ingest_documents
    >>> from finerank.retrieval.store import open_store
    >>> store = open_store(data_dir="search-demo")
    >>> laws = [Document("a1", "第一条 网络运营者应当遵守法律。", file="a.md"),
    ...         Document("a2", "第二条 违反者处五万元罚款。", file="a.md")]
    >>> _ = ingest_documents(laws, store=store, collection="demo", chunker=get_chunker("legal"))
    >>> [h.text for h in SearchService(store).search("demo", "罚款", mode="bm25").hits]
    ['第二条 违反者处五万元罚款。']
    >>> store.close()
    >>> service = SearchService(store, embedder=embedder, reranker=reranker)  # doctest: +SKIP
    >>> response = service.search("laws", "罚款多少？", mode="hybrid", top_n=3)  # doctest: +SKIP
    >>> [(h.first_stage_rank, h.rerank_rank, h.metadata["article_cn"]) for h in response.hits]
    ... # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from finerank.errors import ConflictError, InvalidInputError
from finerank.retrieval.bm25 import ANALYZER_VERSION, Bm25Encoder, SparseVector
from finerank.retrieval.context import DocumentContext, with_document_context
from finerank.retrieval.expansion import PrfConfig, rocchio
from finerank.retrieval.head import RerankHead
from finerank.retrieval.metadata import safe_metadata, safe_text
from finerank.retrieval.store import (
    CollectionSpec,
    FusionSpec,
    StoredHit,
    StoreQuery,
    VectorStore,
)

SearchMode = Literal["bm25", "dense", "hybrid", "bm25+prf", "hybrid+prf"]
#: first-stage modes: the store's three, and BM25 / hybrid with pseudo-relevance feedback
SEARCH_MODES: tuple[str, ...] = ("bm25", "dense", "hybrid", "bm25+prf", "hybrid+prf")
#: what document context reads of the hits of its deep first pass
CONTEXT_FIELDS = ("file", "source")


class SupportsRerank(Protocol):
    """A :class:`finerank.Reranker` or anything with the same ``rerank`` signature."""

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        top_n: int | None = None,
    ) -> list: ...


@dataclass
class SearchHit:
    """One result with both stages' ranks (1-based) and scores.

    ``rerank_rank``/``rerank_score`` are ``None`` when the hit was not reranked (reranking
    off, or the hit was below ``rerank_k``). ``start``/``end`` locate ``text`` in ``source``.
    """

    chunk_id: str
    text: str
    context: str
    source: str
    start: int
    end: int
    metadata: dict[str, Any]
    first_stage_rank: int
    first_stage_score: float
    rerank_rank: int | None = None
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SearchResponse:
    query: str
    collection: str
    mode: str
    hits: list[SearchHit]
    candidates: int
    reranked: int
    timings_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        query: str,
        collection: str,
        mode: str,
        hits: list[SearchHit],
        candidates: int,
        reranked: int,
        started: float,
        recalled: float,
    ) -> SearchResponse:
        """A response timed from ``started`` (``time.perf_counter``) to now, the first
        stage ending at ``recalled``."""
        finished = time.perf_counter()
        return cls(
            query=query,
            collection=collection,
            mode=mode,
            hits=hits,
            candidates=candidates,
            reranked=reranked,
            timings_ms={
                "first_stage": round((recalled - started) * 1000, 2),
                "rerank": round((finished - recalled) * 1000, 2),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "collection": self.collection,
            "mode": self.mode,
            "candidates": self.candidates,
            "reranked": self.reranked,
            "timings_ms": self.timings_ms,
            "hits": [hit.to_dict() for hit in self.hits],
        }


def check_positive(name: str, value: int | None) -> None:
    """``value`` must be ``None`` or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


class SearchService:
    """First-stage recall from a collection, then reranking of its top candidates.

    ``reranker`` is a :class:`finerank.Reranker` (or any object with its ``rerank`` method);
    ``None`` means first stage only. ``embedder`` is needed for ``dense`` and ``hybrid``
    modes and must be the model that built the collection. ``fusion`` is how ``hybrid`` fuses
    its branches unless a call says otherwise (default :data:`DEFAULT_HYBRID_FUSION`);
    ``prf`` sets the pseudo-relevance feedback of the ``+prf`` modes (:class:`PrfConfig`);
    ``context`` how much a chunk's document lifts it in the ``bm25`` modes
    (:class:`DocumentContext`, :mod:`finerank.retrieval.context`). :meth:`from_settings` takes
    all three from :class:`finerank.settings.Settings`.
    """

    def __init__(
        self,
        store: VectorStore,
        *,
        embedder=None,
        reranker: SupportsRerank | None = None,
        fusion: FusionSpec | None = None,
        prf: PrfConfig | None = None,
        context: DocumentContext | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.fusion = fusion or DEFAULT_HYBRID_FUSION
        self.prf = prf or PrfConfig()
        self.context = context or DocumentContext()

    @classmethod
    def from_settings(
        cls, settings, store: VectorStore, *, embedder=None, reranker=None
    ) -> SearchService:
        """A service with the fusion, feedback and document-context settings of
        ``settings`` (``fusion``, ``rrf_k``, ``fusion_*_weight``, ``prf_*``, ``document_*``)."""
        return cls(
            store,
            embedder=embedder,
            reranker=reranker,
            fusion=fusion_from_settings(settings),
            prf=PrfConfig.from_settings(settings),
            context=DocumentContext.from_settings(settings),
        )

    def spec(self, collection: str) -> CollectionSpec:
        """Read per call (cheap): a collection may be deleted and rebuilt under the service."""
        return self.store.spec(collection)

    def recall(
        self,
        collection: str,
        query: str,
        *,
        mode: SearchMode = "hybrid",
        recall_k: int = 100,
        filters: Mapping[str, Any] | None = None,
        instruction: str | None = None,
        fusion: FusionSpec | None = None,
    ) -> list[StoredHit]:
        """First stage only: up to ``recall_k`` hits, best first (used by ``finerank eval``).

        ``mode``: ``bm25``, ``dense``, ``hybrid`` (both, fused by ``fusion``, default the
        service's), or ``bm25+prf`` / ``hybrid+prf``: the BM25 query expanded by
        pseudo-relevance feedback from its own first ``prf.docs`` hits
        (:mod:`finerank.retrieval.expansion`). ``bm25`` modes need no embedder, and rank
        with the service's document context (:mod:`finerank.retrieval.context`).
        ``instruction`` goes into the query embedding (Qwen3 embedders use it; others ignore
        it).
        """
        return self.recall_batch(
            collection,
            [query],
            mode=mode,
            recall_k=recall_k,
            filters=filters,
            instruction=instruction,
            fusion=fusion,
        )[0]

    def recall_batch(
        self,
        collection: str,
        queries: Sequence[str],
        *,
        mode: SearchMode = "hybrid",
        recall_k: int = 100,
        filters: Mapping[str, Any] | None = None,
        instruction: str | None = None,
        fusion: FusionSpec | None = None,
        dense: Sequence[Sequence[float]] | None = None,
    ) -> list[list[StoredHit]]:
        """:meth:`recall` for many queries, embedded in one batch and searched in one store
        batch (evaluation runs); with feedback, one more batch for the first pass.
        ``dense``: the queries' embeddings when the caller computed them (the async service,
        through the batching embedding service); by default the service's embedder does.

        Example:
            >>> runs = service.recall_batch("cranfield", ["shock", "flutter"])  # doctest: +SKIP
            >>> [len(hits) for hits in runs]  # doctest: +SKIP
            [100, 100]
        """
        if isinstance(queries, str):
            raise InvalidInputError("queries must be a list of strings, not one string")
        for index, query in enumerate(queries):
            check_query(query, f"queries[{index}]")
        check_mode(mode)
        check_positive("recall_k", recall_k)
        base, _, feedback = mode.partition("+")
        spec = self.spec(collection)
        if base != "dense":
            check_analyzer(collection, spec)
        if dense is None:
            dense = [None] * len(queries)
            if needs_dense(mode) and queries:
                check_query_embedder(collection, spec, self.embedder)
                dense = self.embedder.embed_queries(list(queries), instruction=instruction)
        elif len(dense) != len(queries):
            raise InvalidInputError(f"{len(dense)} query vectors for {len(queries)} queries")
        sparse: list[SparseVector | None] = [
            None if base == "dense" else Bm25Encoder.query_vector(query) for query in queries
        ]
        asked = sparse  # the queries as asked (the document index searches with them)
        if feedback:
            sparse = self._expand(collection, sparse, filters)
        # BM25 modes only: a deeper hybrid pass would change how DBSF normalizes its branches
        contextual = self.context.enabled and base == "bm25"
        limit = self.context.pass_limit(recall_k) if contextual else recall_k
        deep = limit > recall_k
        runs = self.store.query_batch(
            collection,
            [
                StoreQuery(
                    base,  # type: ignore[arg-type]
                    limit,
                    sparse=terms,
                    dense=vector,
                    filters=filters,
                    fusion=fusion or self.fusion,
                    # the deep pass only needs to know each hit's document
                    fields=CONTEXT_FIELDS if deep else None,
                )
                for terms, vector in zip(sparse, dense, strict=True)
            ],
        )
        if not contextual:
            return runs
        # the document index's scores (none for a collection built before it: see
        # finerank.retrieval.documents); one more engine batch, over documents
        indexed = (
            self.store.query_documents(collection, asked, self.context.depth)
            if self.context.index_weight > 0
            else [None] * len(runs)
        )
        runs = [
            with_document_context(
                hits,
                weight=self.context.weight,
                limit=recall_k,
                documents=documents,
                index_weight=self.context.index_weight,
            )
            for hits, documents in zip(runs, indexed, strict=True)
        ]
        if deep:  # the whole payloads of the hits kept
            payloads = self.store.payloads(
                collection, sorted({hit.chunk_id for hits in runs for hit in hits})
            )
            runs = [
                [replace(hit, payload=payloads.get(hit.chunk_id, hit.payload)) for hit in hits]
                for hits in runs
            ]
        return runs

    def _expand(
        self, collection: str, sparse: list[SparseVector | None], filters
    ) -> list[SparseVector | None]:
        """Rocchio expansion of each BM25 query from its first ``prf.docs`` BM25 hits."""
        # feedback comes from the BM25 pass in both +prf modes: on Cranfield it expands as
        # well as the fused pass does (NDCG@10 0.573 vs 0.568) for one sparse search
        firsts = self.store.query_batch(
            collection,
            [StoreQuery("bm25", self.prf.docs, sparse=terms, filters=filters) for terms in sparse],
        )
        wanted = sorted({hit.chunk_id for hits in firsts for hit in hits})
        vectors = self.store.sparse_vectors(collection, wanted)
        expanded = []
        for terms, hits in zip(sparse, firsts, strict=True):
            if terms is None or not terms.indices:
                expanded.append(terms)  # no query term is indexed: nothing to expand
                continue
            feedback = [(h.score, vectors[h.chunk_id]) for h in hits if h.chunk_id in vectors]
            expanded.append(rocchio(terms, feedback, terms=self.prf.terms, weight=self.prf.weight))
        return expanded

    def search(
        self,
        collection: str,
        query: str,
        *,
        mode: SearchMode = "hybrid",
        recall_k: int = 100,
        rerank_k: int | None = None,
        top_n: int = 10,
        filters: Mapping[str, Any] | None = None,
        instruction: str | None = None,
        rerank: bool = True,
    ) -> SearchResponse:
        """Recall ``recall_k`` candidates with ``mode`` (``bm25`` | ``dense`` | ``hybrid`` =
        both fused | ``bm25+prf`` | ``hybrid+prf``, see :meth:`recall`), rerank the first
        ``rerank_k`` of them (default: all) with the reranker, and return ``top_n`` hits:
        reranked ones first (by rerank score), then the rest in first-stage order.
        ``filters`` maps payload keys to a value or a list of values
        (``{"law": "中华人民共和国网络安全法", "source": [...]}``). ``instruction`` is passed
        to the reranker and to a Qwen3 query embedding. ``rerank=False`` (or no reranker)
        returns the first stage as is.

        Example:
            >>> r = service.search("cranfield", "shock waves", top_n=2)  # doctest: +SKIP
            >>> [(h.first_stage_rank, h.rerank_rank) for h in r.hits]  # doctest: +SKIP
            [(3, 1), (1, 2)]
        """
        check_positive("top_n", top_n)
        check_positive("rerank_k", rerank_k)
        started = time.perf_counter()
        candidates = self.recall(
            collection,
            query,
            mode=mode,
            recall_k=recall_k,
            filters=filters,
            instruction=instruction,
        )
        recalled = time.perf_counter()
        hits = [to_hit(candidate) for candidate in candidates]
        reranked = 0
        if rerank and self.reranker is not None and hits:
            head = RerankHead(hits, rerank_k, rerank_text)
            results = self.reranker.rerank(query, head.texts, instruction=instruction)
            hits = head.reorder(results, mark_reranked)
            reranked = head.limit
        return SearchResponse.build(
            query, collection, mode, hits[:top_n], len(candidates), reranked, started, recalled
        )


def check_query(query: object, what: str = "query") -> str:
    """A query must be a non-empty string."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(f"{what} must be a non-empty string")
    return query


def check_mode(mode: object) -> None:
    if mode not in SEARCH_MODES:
        raise InvalidInputError(f"unknown mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")


def needs_dense(mode: str) -> bool:
    """Whether ``mode`` needs a query embedding (``dense``, ``hybrid``, ``hybrid+prf``)."""
    return mode.partition("+")[0] in ("dense", "hybrid")


def check_query_embedder(collection: str, spec: CollectionSpec, embedder) -> None:
    """Raise unless ``embedder`` can embed queries for ``collection`` (dense / hybrid modes).

    ``embedder`` is anything with ``name`` and ``dimension`` (an
    :class:`~finerank.retrieval.embedder.Embedder`, or the batching embedding service).
    """
    if spec.embedding_model is None:
        raise InvalidInputError(
            f"collection {collection!r} has no dense vectors (built without an embedding "
            "model): use mode='bm25', or rebuild it with --embedding-model"
        )
    if embedder is None:
        raise InvalidInputError(
            f"dense and hybrid search need an embedding model, and none is loaded: use "
            f"mode='bm25', or start with --embedding-model (collection {collection!r} was "
            f"built with {spec.embedding_model!r})"
        )
    if embedder.name != spec.embedding_model or embedder.dimension != spec.dimension:
        raise ConflictError(
            f"collection {collection!r} was built with embedding model "
            f"{spec.embedding_model!r} (dimension {spec.dimension}); the query model is "
            f"{embedder.name!r} (dimension {embedder.dimension})"
        )


#: hybrid fusion when nothing says otherwise: DBSF, the best of the fusions measured with
#: real models in both branches (Cranfield, all-MiniLM-L6-v2: NDCG@10 0.563 vs 0.549 for
#: RRF k 2 and 0.547 for RRF k 60; docs/evaluation.md)
DEFAULT_HYBRID_FUSION = FusionSpec(method="dbsf")


def fusion_from_settings(settings) -> FusionSpec:
    """The :class:`FusionSpec` of ``settings.fusion``, ``rrf_k``, ``fusion_sparse_weight``
    and ``fusion_dense_weight``.

    Example:
        >>> from finerank.settings import Settings
        >>> fusion_from_settings(Settings(fusion="rrf", rrf_k=60))
        FusionSpec(method='rrf', rrf_k=60, weights=(1.0, 1.0), prefetch_limit=None)
    """
    return FusionSpec(
        method=settings.fusion,
        rrf_k=settings.rrf_k,
        weights=(settings.fusion_sparse_weight, settings.fusion_dense_weight),
    )


def check_analyzer(collection: str, spec: CollectionSpec) -> None:
    """A collection's BM25 vectors are only comparable with queries of the same analyzer."""
    if spec.analyzer != ANALYZER_VERSION:
        raise ConflictError(
            f"collection {collection!r} was built with BM25 analyzer {spec.analyzer}; this "
            f"finerank analyzes queries with {ANALYZER_VERSION}: rebuild the collection "
            f"(finerank collections delete {collection}, then index it again)"
        )


def rerank_text(hit: SearchHit) -> str:
    """What the reranker reads: the chunk with its heading context."""
    return f"{hit.context}\n{hit.text}" if hit.context else hit.text


def mark_reranked(hit: SearchHit, rank: int, score: float) -> None:
    """Record the reranker's rank and score on a hit (a :meth:`RerankHead.reorder` hook)."""
    hit.rerank_rank, hit.rerank_score = rank, score


def to_hit(stored: StoredHit) -> SearchHit:
    """A store hit as a search hit (first-stage rank and score set, not reranked yet).

    Text and metadata are made safe to return (:func:`~finerank.retrieval.metadata.safe_text`,
    :func:`~finerank.retrieval.metadata.safe_metadata`): a point stored before ingest checked
    them must not fail the searches that find it."""
    payload = stored.payload
    metadata = payload.get("metadata")
    return SearchHit(
        chunk_id=stored.chunk_id,
        text=safe_text(str(payload.get("text", ""))),
        context=safe_text(str(payload.get("context", ""))),
        source=safe_text(str(payload.get("source", ""))),
        start=int(payload.get("start", 0)),
        end=int(payload.get("end", 0)),
        metadata=safe_metadata(metadata) if isinstance(metadata, dict) else {},
        first_stage_rank=stored.rank,
        first_stage_score=stored.score,
    )
