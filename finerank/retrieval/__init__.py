"""Two-stage retrieval: chunk and index documents in Qdrant, recall, then rerank.

Modules: ``embedder`` (Qwen3-Embedding, sentence-transformers, remote), ``chunkers``
(legal, markdown, window), ``ingest`` (loaders, idempotent indexing), ``bm25`` (analyzer and
sparse vectors), ``store`` (Qdrant), ``search`` (:class:`~finerank.retrieval.search.SearchService`).

Example:
    >>> from finerank.retrieval.store import VectorStore  # doctest: +SKIP
    >>> from finerank.retrieval.search import SearchService  # doctest: +SKIP
    >>> SearchService(VectorStore.open()).search("laws", "罚款", mode="bm25")  # doctest: +SKIP
"""
