"""The document index: one BM25 vector per document, next to its chunks.

A collection holds chunks; a *document* is every chunk of one ``file`` (a law, a contract, a
manual: the unit ``finerank index`` replaces). Its document index is a companion collection
in the same store (both engines: Qdrant Edge and a Qdrant server) with one point per
document: the BM25 vector of the whole document (the term counts of all its chunks added up,
then ``tf * (k1 + 1) / (tf + k1)``: BM25 with ``b`` 0, so a long document is not held against
its length), searched with Qdrant's IDF modifier, so IDF is over documents, not chunks. The
``bm25`` search modes add each candidate chunk's document score to it
(:mod:`finerank.retrieval.context`, setting ``document_index_weight``).

Two functions keep it in step with the chunks:

- :func:`update_document_index` ends every ingest (:func:`finerank.retrieval.ingest.finish_ingest`
  for ``finerank index`` and the server's ``/v1/collections`` ingest, the Ray
  ``finerank batch index``). Its cost follows the files of that ingest, not the collection: it
  reads the stored digests of those files' documents only (one retrieve by id, no scroll),
  rebuilds the documents whose chunk ids changed from the term counts the ingest computed for
  its chunks (an ingest always holds every chunk of each of its files: a file is the unit of
  replacement, so a replaced file's vector is the sum over its new chunks, nothing is read back
  from the store), and deletes the documents of its files that have no chunk left. A file
  whose chunks were already stored but whose document is missing or stale (a run interrupted
  between its chunk writes and its document) is rebuilt when it is ingested again, unchanged.
- :func:`sync_document_index` checks and rebuilds the whole index from the stored chunks (one
  scroll of every chunk's ``file`` and id, then reading and analyzing the chunks of the
  documents that changed). It runs for ``finerank collections migrate`` (which also brings a
  current collection's index in step: the way to pick up chunks written straight to Qdrant,
  around finerank) and on the first ingest into a collection that has chunks but no document
  index yet (written before the document index existed), which builds it whole.

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
from array import array
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from finerank.retrieval.bm25 import Bm25Encoder, SparseVector
from finerank.retrieval.bm25_pool import TermCounts, term_counts
from finerank.retrieval.store import VectorStore
from finerank.retrieval.store.base import DocumentPoint
from finerank.retrieval.store.migrate import indexed_text

# chunks read back and analyzed per round while (re)building documents
SYNC_CHUNKS = 4096

#: ``files -> {file: the term counts of each of its chunks}`` (or one summed count per file)
FileCounts = Callable[[Sequence[str]], Mapping[str, Iterable[TermCounts]]]


def document_vector(counts: Iterable[TermCounts], k1: float = 1.2) -> SparseVector:
    """The BM25 vector (without IDF) of a document made of chunks with these term counts:
    frequencies added over the chunks, ``tf * (k1 + 1) / (tf + k1)`` (``b`` 0).

    Example:
        >>> from finerank.retrieval.bm25_pool import count_terms
        >>> v = document_vector([count_terms("fine"), count_terms("fine tax")])
        >>> sorted(round(x, 3) for x in v.values)
        [1.0, 1.375]
    """
    total = sum_counts(counts)
    # b 0: the average length plays no part (the norm is k1)
    encoder = Bm25Encoder(avg_doc_length=1.0, k1=k1, b=0.0)
    return encoder.vector_from_counts(total.length, total.indices, total.frequencies)


def sum_counts(counts: Iterable[TermCounts]) -> TermCounts:
    """The term counts of texts added up (a file's, from its chunks': what
    :func:`document_vector` needs of them).

    Example:
        >>> from finerank.retrieval.bm25_pool import count_terms
        >>> total = sum_counts([count_terms("fine"), count_terms("fine tax")])
        >>> total.length, sorted(total.frequencies)
        (3, [1, 2])
    """
    total: dict[int, int] = {}
    length = 0
    for count in counts:
        length += count.length
        for index, frequency in zip(count.indices, count.frequencies, strict=True):
            total[index] = total.get(index, 0) + frequency
    ordered = sorted(total.items())
    return TermCounts(
        length, array("I", [i for i, _ in ordered]), array("I", [f for _, f in ordered])
    )


def chunk_digest(chunk_ids: Iterable[str]) -> str:
    """What a document's chunks are, in 32 hex digits (their sorted ids, hashed)."""
    return hashlib.md5("\n".join(sorted(chunk_ids)).encode("ascii")).hexdigest()


def update_document_index(
    store: VectorStore,
    collection: str,
    files: Mapping[str, Collection[str]],
    counts: FileCounts,
    *,
    had_chunks: bool = True,
    workers: int | None = None,
) -> int:
    """After an ingest: bring the documents of the ingest's ``files`` in step, at a cost in
    proportion to those files (see the module doc). Returns the documents written or deleted.

    Args:
        store: the store holding ``collection``.
        collection: the collection ingested into.
        files: every file of the ingest with all its chunk ids now (empty: the file has no
            chunk left, its document goes).
        counts: the term counts of the chunks of the files asked for (all of each file's
            chunks, each distinct chunk once), called only for documents to rebuild.
        had_chunks: whether the collection held chunks before this ingest; one that did and
            has no document index gets it built whole (:func:`sync_document_index`).
        workers: as for :func:`sync_document_index` (used only for that whole build).

    Returns:
        The number of documents written or deleted (0: they were in step).
    """
    if not store.has_document_index(collection):
        if had_chunks:
            return sync_document_index(store, collection, workers=workers)
        store.create_document_index(collection)
    k1 = store.spec(collection).k1
    named = {file: ids for file, ids in files.items() if file}
    stored = store.document_digests(collection, list(named))
    digests = {file: chunk_digest(ids) for file, ids in named.items() if ids}
    stale = [file for file, digest in digests.items() if stored.get(file) != digest]
    removed = [file for file, ids in named.items() if not ids and file in stored]
    written = 0
    for group in _groups(stale, named):
        found = counts(group)
        written += store.write_documents(
            collection,
            [
                DocumentPoint(
                    file, document_vector(found[file], k1), len(named[file]), digests[file]
                )
                for file in group
            ],
        )
    deleted = store.delete_documents(collection, removed)
    if written or deleted:
        store.optimize_document_index(collection)
    return written + deleted


def sync_document_index(store: VectorStore, collection: str, *, workers: int | None = None) -> int:
    """Bring ``collection``'s whole document index in step with its stored chunks (creating
    it if it is missing): rebuild every document whose chunks changed, delete those of files
    with no chunk left. Returns the number of documents written or deleted (0: it was in
    step). ``finerank collections migrate`` and the first ingest into a collection without
    an index run it; other ingests run :func:`update_document_index`.

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
    for group in _groups(stale, by_file):
        written += _rebuild(store, collection, group, by_file, digests, spec.k1, workers)
    deleted = store.delete_documents(collection, removed)
    if written or deleted:
        store.optimize_document_index(collection)
    return written + deleted


def _groups(files: Sequence[str], chunks: Mapping[str, Collection[str]]) -> Iterable[list[str]]:
    """``files`` in groups of about ``SYNC_CHUNKS`` chunks (each file whole)."""
    group: list[str] = []
    size = 0
    for file in files:
        group.append(file)
        size += len(chunks[file])
        if size >= SYNC_CHUNKS:
            yield group
            group, size = [], 0
    if group:
        yield group


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
