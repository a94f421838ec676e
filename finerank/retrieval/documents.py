"""The document index: one BM25 vector per document, next to its chunks.

A collection holds chunks; a *document* is every chunk of one ``file`` (a law, a contract, a
manual: the unit ``finerank index`` replaces). Its document index is a companion collection
in the same store (both engines: Qdrant Edge and a Qdrant server) with one point per
document: the BM25 vector of the whole document (the term counts of all its chunks added up,
then ``tf * (k1 + 1) / (tf + k1)``: BM25 with ``b`` 0, so a long document is not held against
its length), searched with Qdrant's IDF modifier, so IDF is over documents, not chunks. The
``bm25`` search modes add each candidate chunk's document score to it
(:mod:`finerank.retrieval.context`, setting ``document_index_weight``).

:func:`sync_document_index` keeps it in step with the chunks. Every ingest path ends with it
(:func:`finerank.retrieval.ingest.finish_ingest`, the server's ``/v1/collections`` ingest, the
Ray ``finerank batch index``, ``finerank collections migrate``): it compares each file's chunk ids
with the digest stored on its document and rebuilds exactly the documents that were added,
replaced or changed, and deletes those whose file has no chunk left. A collection written
before the document index existed has none: its searches rank without document scores (as
before) until its next ingest (any ``finerank index`` run into it, even of unchanged files)
builds the whole index from the stored chunks; an interrupted ingest converges the same way.

Example:
    >>> from finerank.retrieval.store import CollectionSpec, StoredPoint, VectorStore
    >>> from finerank.retrieval.bm25 import Bm25Encoder
    >>> store = VectorStore.memory()
    >>> store.create("notes", CollectionSpec(None, None, {"name": "window"}, 4.0))
    >>> encoder = Bm25Encoder(4.0)
    >>> store.upsert("notes", [StoredPoint(f"{i:032x}", {"chunk_id": f"{i:032x}", "file": f,
    ...     "text": t, "context": ""}, encoder.document_vector(t))
    ...     for i, (f, t) in enumerate([("a", "penalty fine"), ("a", "fine"), ("b", "tax")])])
    3
    >>> sync_document_index(store, "notes")
    2
    >>> [(f, round(d.score, 3), d.chunks) for f, d in store.query_documents(
    ...     "notes", [Bm25Encoder.query_vector("fine")], 10)[0].items()]
    [('a', 0.953, 2)]
    >>> store.close()
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from finerank.retrieval.bm25 import SparseVector
from finerank.retrieval.bm25_pool import TermCounts, term_counts
from finerank.retrieval.store import VectorStore
from finerank.retrieval.store.base import DocumentPoint
from finerank.retrieval.store.migrate import indexed_text

# chunks read back and analyzed per round while (re)building documents
SYNC_CHUNKS = 4096


def document_vector(counts: Iterable[TermCounts], k1: float = 1.2) -> SparseVector:
    """The BM25 vector (without IDF) of a document made of chunks with these term counts:
    frequencies added over the chunks, ``tf * (k1 + 1) / (tf + k1)`` (``b`` 0).

    Example:
        >>> from finerank.retrieval.bm25_pool import count_terms
        >>> v = document_vector([count_terms("fine"), count_terms("fine tax")])
        >>> sorted(round(x, 3) for x in v.values)
        [1.0, 1.375]
    """
    total: dict[int, int] = {}
    for count in counts:
        for index, frequency in zip(count.indices, count.frequencies, strict=True):
            total[index] = total.get(index, 0) + frequency
    ordered = sorted(total.items())
    return SparseVector(
        [index for index, _ in ordered], [tf * (k1 + 1) / (tf + k1) for _, tf in ordered]
    )


def chunk_digest(chunk_ids: Iterable[str]) -> str:
    """What a document's chunks are, in 32 hex digits (their sorted ids, hashed)."""
    return hashlib.md5("\n".join(sorted(chunk_ids)).encode("ascii")).hexdigest()


def sync_document_index(store: VectorStore, collection: str, *, workers: int | None = None) -> int:
    """Bring ``collection``'s document index in step with its chunks (creating it if it is
    missing): rebuild every document whose chunks changed, delete those of files with no
    chunk left. Returns the number of documents written or deleted (0: it was in step).

    ``workers``: processes analyzing the chunks read back (``None``: every core for large
    rebuilds; a server passes 1, it must not fork). Costs one scroll of the chunks' ``file``
    and id, one of the documents, then reading and analyzing only the changed documents'
    chunks."""
    spec = store.spec(collection)
    by_file = {file: ids for file, ids in store.ids_by_file(collection).items() if file}
    stored = store.document_digests(collection)
    if not store.has_document_index(collection):
        store.create_document_index(collection)
    digests = {file: chunk_digest(ids) for file, ids in by_file.items()}
    stale = sorted(file for file, digest in digests.items() if stored.get(file) != digest)
    removed = sorted(file for file in stored if file not in by_file)
    written = 0
    group: list[str] = []
    size = 0
    for file in stale:
        group.append(file)
        size += len(by_file[file])
        if size >= SYNC_CHUNKS:
            written += _rebuild(store, collection, group, by_file, digests, spec.k1, workers)
            group, size = [], 0
    if group:
        written += _rebuild(store, collection, group, by_file, digests, spec.k1, workers)
    deleted = store.delete_documents(collection, removed)
    if written or deleted:
        store.optimize_document_index(collection)
    return written + deleted


def _rebuild(
    store: VectorStore,
    collection: str,
    files: Sequence[str],
    by_file: Mapping[str, set[str]],
    digests: Mapping[str, str],
    k1: float,
    workers: int | None,
) -> int:
    ids = [chunk_id for file in files for chunk_id in sorted(by_file[file])]
    payloads = store.payloads(collection, ids)
    present = [chunk_id for chunk_id in ids if chunk_id in payloads]
    counts = dict(
        zip(
            present,
            term_counts([indexed_text(payloads[c]) for c in present], workers=workers),
            strict=True,
        )
    )
    documents = [
        DocumentPoint(
            file,
            document_vector((counts[c] for c in sorted(by_file[file]) if c in counts), k1),
            len(by_file[file]),
            digests[file],
        )
        for file in files
    ]
    return store.write_documents(collection, documents)
