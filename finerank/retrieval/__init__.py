"""Two-stage retrieval: chunk and index documents in Qdrant, recall, then rerank.

Modules: ``embedder`` (Qwen3-Embedding, sentence-transformers, remote), ``chunkers``
(legal, markdown, window), ``ingest`` (loaders, idempotent indexing), ``bm25`` (analyzer and
sparse vectors), ``store`` (Qdrant Edge embedded, or a Qdrant server), ``search``
(:class:`~finerank.retrieval.search.SearchService`).

Example:
    >>> from finerank.retrieval.store import open_store
    >>> from finerank.retrieval.search import SearchService
    >>> with open_store(data_dir="retrieval-demo") as store:
    ...     SearchService(store).search("laws", "罚款", mode="bm25")
    Traceback (most recent call last):
    ...
    finerank.errors.NotFoundError: collection 'laws' does not exist (create it with finerank index)
"""
