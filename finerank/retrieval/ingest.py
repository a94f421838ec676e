"""Load files, chunk them and write them to a collection, idempotently.

Supported files: ``.txt``, ``.md``/``.markdown``, ``.jsonl`` (one record per line: a ``text``
field, other fields become metadata; a ``title`` is put first as in BEIR; records that share a
``doc_id`` and carry a ``page`` are joined in page order into one document), ``.pdf`` (pypdf,
pages joined) and ``.html``/``.htm`` (BeautifulSoup; scripts and styles dropped).

Idempotence: a chunk's id is a hash of its source, chunker, span and text, and the unit of
replacement is the file. Re-ingesting an unchanged file finds exactly its ids in the
collection and does nothing; a changed file gets its new chunks written first, then its old
ones deleted; a run killed midway leaves complete points only (each batch is one upsert), and
the next run writes what is missing and deletes what is stale, converging to the same
collection as an uninterrupted run.

Example:
    >>> from finerank.retrieval.ingest import ingest  # doctest: +SKIP
    >>> report = ingest(["data/laws"], store=store, collection="laws",
    ...                 chunker=get_chunker("legal"), embedder=embedder)  # doctest: +SKIP
    >>> report.added  # doctest: +SKIP
    208
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finerank.errors import InvalidInputError, LimitExceededError
from finerank.jsonl import parse_jsonl
from finerank.retrieval.bm25 import Bm25Encoder, average_length
from finerank.retrieval.bm25_pool import TermCounts, count_terms, iter_term_counts, term_counts
from finerank.retrieval.chunkers import Chunk, Chunker, Document
from finerank.retrieval.metadata import check_document
from finerank.retrieval.storage import DEFAULT_MIN_FREE_BYTES, check_free_space, storage_errors
from finerank.retrieval.store import CollectionSpec, StoredPoint, VectorStore

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl", ".pdf", ".html", ".htm")


# --- loading -----------------------------------------------------------------------------


def iter_files(paths: Iterable[str | Path]) -> list[Path]:
    """Supported files under ``paths`` (files as given, folders recursively), sorted, hidden
    files and folders skipped. A missing path or an explicitly named unsupported file is an
    error."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise InvalidInputError(
                    f"unsupported file type {path.suffix or '(none)'} for {path}: supported "
                    f"are {', '.join(SUPPORTED_SUFFIXES)}"
                )
            files.append(path.resolve())
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path).parts
                if any(part.startswith(".") for part in relative):
                    continue
                if child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES:
                    files.append(child.resolve())
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return sorted(dict.fromkeys(files))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _scalar_metadata(record: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.items()
        if key not in skip and (value is None or isinstance(value, (str, int, float, bool, list)))
    }


def load_jsonl(path: Path, text_field: str = "text") -> list[Document]:
    file = str(path)
    records: list[tuple[int, dict[str, Any]]] = []
    for number, record in parse_jsonl(_read_text(path).splitlines(), path):
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise InvalidInputError(
                f"{path}:{number}: each line needs a string {text_field!r} field"
            )
        records.append((number, record))
    documents: list[Document] = []
    pages: dict[str, list[dict[str, Any]]] = {}
    for number, record in records:
        if isinstance(record.get("doc_id"), str) and isinstance(record.get("page"), int):
            pages.setdefault(record["doc_id"], []).append(record)
            continue
        key = record.get("_id", record.get("id", f"L{number}"))
        text = record[text_field]
        title = record.get("title")
        if isinstance(title, str) and title.strip():
            text = f"{title.strip()}\n\n{text}"
        metadata = _scalar_metadata(record, {text_field, "_id"})
        documents.append(Document(f"{file}#{key}", text, metadata, file))
    for doc_id, group in pages.items():
        group.sort(key=lambda record: record["page"])
        text = "\n".join(record[text_field] for record in group)
        metadata = _scalar_metadata(group[0], {text_field, "page", "char_count"})
        metadata["pages"] = len(group)
        documents.append(Document(f"{file}#{doc_id}", text, metadata, file))
    return documents


def load_pdf(path: Path) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"cannot read PDF {path}: {exc}") from None
    metadata: dict[str, Any] = {"pages": len(pages)}
    title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    if isinstance(title, str) and title.strip():
        metadata["title"] = title.strip()
    return [Document(str(path), "\n\n".join(pages), metadata, str(path))]


_HTML_BLOCKS = [
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "tr",
    "td",
    "th",
    "pre",
    "blockquote",
    "section",
    "article",
    "header",
    "footer",
    "ul",
    "ol",
    "dt",
    "dd",
    "table",
    "main",
    "aside",
    "nav",
    "figcaption",
]


def load_html(path: Path) -> list[Document]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_text(path), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    # block elements end lines; inline ones (b, a, span) stay inside their sentence
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    text = "\n".join(line for line in lines if line)
    metadata = {"title": title} if title else {}
    return [Document(str(path), text, metadata, str(path))]


def load_file(path: str | Path) -> list[Document]:
    """Documents in one file (see the module docstring for the formats).

    Example:
        >>> load_file("notes.txt")[0].source  # doctest: +SKIP
        '/abs/path/notes.txt'
    """
    path = Path(path).resolve()
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return load_jsonl(path)
    if suffix == ".pdf":
        return load_pdf(path)
    if suffix in (".html", ".htm"):
        return load_html(path)
    if suffix in (".txt", ".md", ".markdown"):
        return [Document(str(path), _read_text(path), {}, str(path))]
    raise InvalidInputError(f"unsupported file type {suffix} for {path}")


# --- chunk records -----------------------------------------------------------------------


def chunk_id(source: str, chunker_name: str, chunk: Chunk) -> str:
    """Content hash naming a chunk (32 hex digits): same input, same id, in any process.

    Example:
        >>> chunk_id("a.txt", "window", Chunk("hello", 0, 5))
        'a649e603bc091dd5f4d19f28b86ca7f1'
    """
    digest = hashlib.sha256()
    for part in (source, chunker_name, str(chunk.start), str(chunk.end), chunk.indexed_text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk ready to store: its id and payload (``payload["text"]`` etc.)."""

    chunk_id: str
    file: str
    indexed_text: str
    payload: dict[str, Any]


def chunk_records(document: Document, chunker: Chunker) -> list[ChunkRecord]:
    """Chunk one document into records (the same ids as every other ingest path).

    Raises:
        InvalidInputError: the document's text or metadata could not be returned by every
            later search (:func:`finerank.retrieval.metadata.check_document`).
    """
    check_document(document.source, document.text, document.metadata)
    file = document.file or document.source
    records = []
    for index, chunk in enumerate(chunker.chunk(document)):
        cid = chunk_id(document.source, chunker.name, chunk)
        payload = {
            "chunk_id": cid,
            "text": chunk.text,
            "context": chunk.context,
            "source": document.source,
            "file": file,
            "start": chunk.start,
            "end": chunk.end,
            "chunk_index": index,
            "metadata": chunk.metadata,
        }
        records.append(ChunkRecord(cid, file, chunk.indexed_text, payload))
    return records


def build_points(
    records: Sequence[ChunkRecord],
    encoder: Bm25Encoder,
    embedder=None,
    counts: Sequence[TermCounts] | None = None,
) -> list[StoredPoint]:
    """Vectors for records: BM25 term weights, plus dense embeddings when ``embedder``.

    ``counts`` are the records' term counts when already computed (``bm25_pool``)."""
    texts = [record.indexed_text for record in records]
    dense = embedder.embed_documents(texts) if embedder is not None and texts else None
    if counts is None:
        counts = [count_terms(text) for text in texts]
    return [
        StoredPoint(
            record.chunk_id,
            record.payload,
            encoder.vector_from_counts(count.length, count.indices, count.frequencies),
            None if dense is None else dense[i],
        )
        for i, (record, count) in enumerate(zip(records, counts, strict=True))
    ]


def collection_spec(
    chunker: Chunker, embedder=None, texts: Iterable[str] = (), avg_doc_length: float | None = None
) -> CollectionSpec:
    """The spec a new collection gets; BM25's average length is measured on ``texts``."""
    return CollectionSpec(
        embedding_model=getattr(embedder, "name", None),
        dimension=getattr(embedder, "dimension", None),
        embedding_source=getattr(embedder, "source", None),
        chunker=chunker.config(),
        avg_doc_length=avg_doc_length if avg_doc_length else average_length(texts),
    )


# --- ingest ------------------------------------------------------------------------------


@dataclass
class IngestReport:
    files: int = 0
    documents: int = 0
    chunks: int = 0
    added: int = 0
    deleted: int = 0
    unchanged_files: int = 0
    empty_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: documents (files) written to or deleted from the document index
    #: (:mod:`finerank.retrieval.documents`); all of them when it was built for the first time
    documents_indexed: int = 0

    @property
    def chunks_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.files} files, {self.documents} documents, {self.chunks} chunks: "
            f"{self.added} added, {self.deleted} deleted, {self.unchanged_files} files "
            f"unchanged, in {self.seconds:.1f} s ({self.chunks_per_second:.1f} chunks/s)"
        )


def ingest(
    paths: Iterable[str | Path],
    *,
    store: VectorStore,
    collection: str,
    chunker: Chunker,
    embedder=None,
    batch_size: int = 64,
    progress: bool = True,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
) -> IngestReport:
    """Index files and folders into ``collection`` (created on first use); see module doc."""
    files = iter_files(paths)
    documents: list[Document] = []
    for path in _progress(files, progress, "reading files", "file"):
        documents.extend(load_file(path))
    report = ingest_documents(
        documents,
        store=store,
        collection=collection,
        chunker=chunker,
        embedder=embedder,
        batch_size=batch_size,
        progress=progress,
        files=[str(f) for f in files],
        min_free_bytes=min_free_bytes,
    )
    return report


def ingest_documents(
    documents: Sequence[Document],
    *,
    store: VectorStore,
    collection: str,
    chunker: Chunker,
    embedder=None,
    batch_size: int = 64,
    progress: bool = False,
    files: Sequence[str] | None = None,
    on_batch: Callable[[int], None] | None = None,
    max_chunks: int | None = None,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
) -> IngestReport:
    """Index already loaded documents; each document's ``file`` is its replacement unit.

    ``files`` lists every file of the run (files that now give no chunk get theirs deleted);
    by default, the files of ``documents``. ``on_batch`` is called with the number of points
    written after each batch (progress reporting, tests that interrupt a run). ``max_chunks``
    refuses (before writing anything) a run that produces more chunks. Before each batch the
    store's disk must keep ``min_free_bytes`` free (:mod:`finerank.retrieval.storage`).

    The steps (:func:`chunk_documents`, :func:`plan_ingest`, the batches of
    :meth:`IngestPlan.batches`, :func:`finish_ingest`) are public so that the async
    :class:`~finerank.retrieval.service.RetrievalService` runs the same ingest with each step
    on its own thread.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise InvalidInputError("batch_size must be at least 1")
    chunked = chunk_documents(documents, chunker, files=files, progress=progress)
    check_chunk_limit(chunked, max_chunks)
    check_free_space(store, min_free_bytes)
    with storage_errors(store):
        plan = plan_ingest(store, collection, chunked, chunker, embedder)
    report = plan.report
    bar = _progress(
        None, progress and bool(plan.pending), "embedding", "chunk", total=len(plan.pending)
    )
    for batch, counts in plan.batches(batch_size):
        points = build_points(batch, plan.encoder, embedder, counts)
        check_free_space(store, min_free_bytes)
        with storage_errors(store):
            report.added += store.upsert(collection, points)
        if bar is not None:
            bar.update(len(batch))
        if on_batch is not None:
            on_batch(len(batch))
    if bar is not None:
        bar.close()
    # stale chunks go last: an interrupted run never leaves a file with fewer chunks
    with storage_errors(store):
        report.deleted = store.delete_chunks(collection, plan.stale)
        finish_ingest(store, collection, plan)
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class ChunkedDocuments:
    """Documents chunked into records, grouped by their file (the unit of replacement)."""

    documents: int
    by_file: dict[str, list[ChunkRecord]]

    @property
    def chunks(self) -> int:
        return sum(len(records) for records in self.by_file.values())


def chunk_documents(
    documents: Sequence[Document],
    chunker: Chunker,
    *,
    files: Sequence[str] | None = None,
    progress: bool = False,
) -> ChunkedDocuments:
    """Chunk documents into records per file (no store access; any thread)."""
    by_file: dict[str, list[ChunkRecord]] = {name: [] for name in files or ()}
    for document in _progress(documents, progress and len(documents) > 1, "chunking", "doc"):
        by_file.setdefault(document.file or document.source, []).extend(
            chunk_records(document, chunker)
        )
    return ChunkedDocuments(len(documents), by_file)


def check_chunk_limit(chunked: ChunkedDocuments, max_chunks: int | None) -> None:
    """Refuse a run that produced more than ``max_chunks`` chunks (``max_chunks_per_request``)."""
    if max_chunks is not None and chunked.chunks > max_chunks:
        raise LimitExceededError(
            f"these documents make {chunked.chunks} chunks > max_chunks_per_request="
            f"{max_chunks}; send fewer or shorter documents per request (or a chunker with "
            "larger chunks)",
            limit_name="max_chunks_per_request",
            limit=max_chunks,
            value=chunked.chunks,
        )


@dataclass
class IngestPlan:
    """What a run writes: the collection's spec, the records not stored yet, the stale ids,
    and the BM25 term counts already computed (a new collection's, for its average length).

    It also keeps what the document index needs afterwards (:func:`finish_ingest`): every
    file of the run with all its records (``by_file``; an ingest always holds a file whole),
    whether the collection held chunks before, and the term counts computed for records
    (``counted``, by chunk id: those of :meth:`batches`, so no chunk is analyzed twice)."""

    spec: CollectionSpec
    pending: list[ChunkRecord]
    stale: list[str]
    report: IngestReport
    analyzed: list[TermCounts] | None = None
    workers: int | None = None
    by_file: dict[str, list[ChunkRecord]] = field(default_factory=dict)
    had_chunks: bool = True
    counted: dict[str, TermCounts] = field(default_factory=dict)

    @property
    def encoder(self) -> Bm25Encoder:
        return Bm25Encoder(self.spec.avg_doc_length, self.spec.k1, self.spec.b)

    def batches(self, batch_size: int) -> Iterator[tuple[list[ChunkRecord], list[TermCounts]]]:
        """The pending records in batches of ``batch_size``, each with its term counts (the
        ones already computed, else analyzed while the batches are written)."""
        if self.analyzed is not None:
            counts: Iterator[TermCounts] = (count for count in self.analyzed)  # closable
        else:
            texts = [record.indexed_text for record in self.pending]
            counts = iter_term_counts(texts, workers=self.workers)
        with contextlib.closing(counts):  # stops the workers if a batch fails
            for first in range(0, len(self.pending), batch_size):
                batch = self.pending[first : first + batch_size]
                found = list(itertools.islice(counts, len(batch)))
                self.counted.update(zip((record.chunk_id for record in batch), found, strict=True))
                yield batch, found

    @property
    def files(self) -> dict[str, set[str]]:
        """Every file of the run with all its chunk ids after it (empty: none left)."""
        return {name: {r.chunk_id for r in records} for name, records in self.by_file.items()}

    def file_counts(self, files: Sequence[str]) -> dict[str, list[TermCounts]]:
        """The term counts of each distinct chunk of ``files``: those the run computed, the
        rest (chunks a replaced file kept, a file whose document was missing) analyzed now."""
        wanted: dict[str, ChunkRecord] = {}
        for name in files:
            for record in self.by_file[name]:
                wanted.setdefault(record.chunk_id, record)
        missing = [record for key, record in wanted.items() if key not in self.counted]
        texts = [record.indexed_text for record in missing]
        self.counted.update(
            zip(
                (record.chunk_id for record in missing),
                term_counts(texts, workers=self.workers),
                strict=True,
            )
        )
        return {
            name: [
                self.counted[key] for key in dict.fromkeys(r.chunk_id for r in self.by_file[name])
            ]
            for name in files
        }


def plan_ingest(
    store: VectorStore,
    collection: str,
    chunked: ChunkedDocuments,
    chunker: Chunker,
    embedder=None,
    *,
    workers: int | None = None,
    analyzed: list[TermCounts] | None = None,
) -> IngestPlan:
    """Create (or check) the collection and diff the chunk ids against it, file by file.

    ``workers``: processes analyzing BM25 terms (default: every core for large ingests; a
    server passes 1, it must not fork). ``analyzed``: the term counts of every record of
    ``chunked`` (in order) when the caller computed them elsewhere, so this does store work
    only."""
    report = IngestReport(documents=chunked.documents)
    by_file = chunked.by_file
    report.files = len(by_file)
    report.chunks = chunked.chunks
    report.empty_files = [name for name, records in by_file.items() if not records]
    records = [r for rs in by_file.values() for r in rs]
    if analyzed is not None and len(analyzed) != len(records):
        raise ValueError(f"{len(analyzed)} term counts for {len(records)} chunks")
    if store.exists(collection):
        spec = collection_spec(chunker, embedder, avg_doc_length=1.0)  # the stored one wins
    else:
        # BM25's average length is fixed when the collection is created (see
        # bm25.Bm25Encoder); each text is analyzed once, in parallel, for it and the vectors
        if analyzed is None:
            analyzed = term_counts([r.indexed_text for r in records], workers=workers)
        total = sum(count.length for count in analyzed)
        average = max(1.0, total / len(analyzed)) if analyzed else 1.0
        spec = collection_spec(chunker, embedder, avg_doc_length=average)
    spec = store.ensure(collection, spec)
    existing = store.ids_by_file(collection)
    pending: list[ChunkRecord] = []
    stale: list[str] = []
    for name, file_records in by_file.items():
        old = existing.get(name, set())
        new = {record.chunk_id for record in file_records}
        if old == new:
            report.unchanged_files += bool(new)
            continue
        pending.extend(record for record in file_records if record.chunk_id not in old)
        stale.extend(sorted(old - new))
    counted: dict[str, TermCounts] = {}
    if analyzed is not None:  # the counts of the records still to write, in their order
        # all of them, for the documents to rebuild (the list holds them anyway)
        counted = dict(zip((record.chunk_id for record in records), analyzed, strict=True))
        position = {id(record): i for i, record in enumerate(records)}
        analyzed = [analyzed[position[id(record)]] for record in pending]
    return IngestPlan(
        spec, pending, stale, report, analyzed, workers, by_file, bool(existing), counted
    )


def finish_ingest(store: VectorStore, collection: str, plan: IngestPlan) -> None:
    """After a run's writes: build indexes and merge segments (embedded; then flushed), and
    bring the documents of the run's files in step
    (:func:`~finerank.retrieval.documents.update_document_index`: from the term counts this
    run computed, at a cost that follows its files, not the collection; built whole the first
    time for a collection written before the document index existed)."""
    from finerank.retrieval.documents import update_document_index

    report = plan.report
    if report.added or report.deleted:
        store.optimize(collection)
    report.documents_indexed = update_document_index(
        store,
        collection,
        plan.files,
        plan.file_counts,
        had_chunks=plan.had_chunks,
        workers=plan.workers,
    )


def _progress(items, enabled: bool, description: str, unit: str, total: int | None = None):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    if items is None:
        return tqdm(total=total, desc=description, unit=unit, leave=False)
    return tqdm(items, desc=description, unit=unit, leave=False)
