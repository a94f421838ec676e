"""``finerank batch index``: chunk, embed and upsert a large corpus on a Ray cluster.

The same collection as ``finerank index`` (:func:`finerank.retrieval.ingest.ingest`): the same
loaders, chunkers, content-hash chunk ids, payloads, BM25 vectors, collection spec and
replace-by-file rule; only the work is spread out.

1. Ray tasks load and chunk groups of files in parallel (records stay in Ray's object store;
   the driver only receives chunk ids, files and BM25 term totals; each file's summed term
   counts stay there too, fetched only for the files whose document is rebuilt).
2. The driver fixes the collection spec (BM25's average length over all chunks, as a new
   ``finerank index`` would) and diffs the ids against the collection.
3. A pool of embedding actors (one model each) turns new records into points. With a Qdrant
   server (``qdrant_url``) each actor upserts its own points; with embedded Qdrant (a local
   directory only one process may open) the actors return points and the driver upserts.
4. Stale chunks of changed files are deleted last, so an interrupted run never leaves a file
   with fewer chunks; a re-run writes only what is missing.
5. The document index (:mod:`finerank.retrieval.documents`) gets the documents of the changed
   files, from the term counts the tasks computed (a task chunks each of its files whole).

Example:
    >>> from finerank.retrieval.chunkers import get_chunker
    >>> report = batch_index(["corpus/"], collection="docs", chunker=get_chunker("window"),
    ...                      settings=Settings(embedding_model="/models/Qwen3-Embedding-0.6B",
    ...                                        qdrant_url="http://qdrant:6333"),
    ...                      actors=8, gpus_per_actor=1)  # doctest: +SKIP
    >>> report.summary()  # doctest: +SKIP
    '120000 files, ... chunks: ... added, 0 deleted, ...'
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from finerank.distributed.cluster import absolute_paths, ensure_ray, import_ray
from finerank.errors import InvalidInputError
from finerank.retrieval.bm25_pool import TermCounts
from finerank.retrieval.chunkers import Chunker
from finerank.retrieval.ingest import ChunkRecord, IngestReport
from finerank.retrieval.store import CollectionSpec, VectorStore
from finerank.runtime import open_store
from finerank.settings import Settings

# Files are chunked in tasks of about this many bytes (many small files share a task).
TASK_BYTES = 8 * 1024 * 1024
MAX_FILES_PER_TASK = 256


@dataclass(frozen=True)
class IndexProgress:
    """Reported after each batch of points is written."""

    written: int
    pending: int
    elapsed_s: float

    @property
    def chunks_per_second(self) -> float:
        return self.written / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class _ChunkSummary:
    """What the driver needs of one chunking task: ids per file, BM25 term counts."""

    documents: int
    ids: list[tuple[str, str]]  # (file, chunk_id)
    terms: int


def group_files(files: Sequence[Path], task_bytes: int = TASK_BYTES) -> list[list[Path]]:
    """Consecutive files in groups of about ``task_bytes`` (a big file gets its own task).

    Example:
        >>> group_files([Path("a"), Path("b")], task_bytes=1)  # doctest: +SKIP
        [[PosixPath('a')], [PosixPath('b')]]
    """
    groups: list[list[Path]] = []
    size = 0
    for file in files:
        length = file.stat().st_size
        if groups and size + length <= task_bytes and len(groups[-1]) < MAX_FILES_PER_TASK:
            groups[-1].append(file)
            size += length
        else:
            groups.append([file])
            size = length
    return groups


def _chunk_files(
    files: Sequence[Path], chunker: Chunker
) -> tuple[list[ChunkRecord], _ChunkSummary, dict[str, TermCounts]]:
    """Ray task body: load and chunk files exactly as ``ingest`` does; also each file's term
    counts summed over its distinct chunks (its document vector's input)."""
    from finerank.retrieval.bm25_pool import count_terms
    from finerank.retrieval.documents import sum_counts
    from finerank.retrieval.ingest import chunk_records, load_file

    records: list[ChunkRecord] = []
    documents = 0
    for file in files:
        for document in load_file(file):
            documents += 1
            records.extend(chunk_records(document, chunker))
    counts = {record.chunk_id: count_terms(record.indexed_text) for record in records}
    by_file: dict[str, set[str]] = {}
    for record in records:
        by_file.setdefault(record.file, set()).add(record.chunk_id)
    file_terms = {file: sum_counts(counts[c] for c in ids) for file, ids in by_file.items()}
    terms = sum(counts[record.chunk_id].length for record in records)
    summary = _ChunkSummary(documents, [(r.file, r.chunk_id) for r in records], terms)
    return records, summary, file_terms


class EmbedWorker:
    """Ray actor: one embedding model; turns chunk records into stored points.

    When the model's kernels compile (bf16 on CPU), it warms up once at start like a server
    (:meth:`~finerank.retrieval.embedder.Embedder.warm_up`, logged): no batch pays for it.
    """

    def __init__(self, settings: Settings):
        from finerank.runtime import Runtime

        self.settings = settings
        self.runtime = Runtime(settings)
        self.embedder = self.runtime.embedder() if self.runtime.has("embedder") else None
        if self.embedder is not None:
            self.embedder.warm_up()

    def identity(self) -> tuple[str | None, int | None, str | None]:
        """(name, dimension, source) of the embedder, as the collection spec records them."""
        e = self.embedder
        return (None, None, None) if e is None else (e.name, e.dimension, e.source)

    def points(
        self,
        records: list[ChunkRecord],
        skip: set[str],
        spec: CollectionSpec,
        collection: str | None,
        batch_size: int,
    ) -> list[Any] | int:
        """Points of the records not in ``skip``; upserted here when ``collection`` is set
        (Qdrant server), else returned to the driver."""
        from finerank.retrieval.bm25 import Bm25Encoder
        from finerank.retrieval.ingest import build_points

        pending = [r for r in records if r.chunk_id not in skip]
        encoder = Bm25Encoder(spec.avg_doc_length, spec.k1, spec.b)
        points = []
        written = 0
        for first in range(0, len(pending), batch_size):
            batch = build_points(pending[first : first + batch_size], encoder, self.embedder)
            if collection is None:
                points.extend(batch)
                continue
            written += self.runtime.store().upsert(collection, batch)
        return points if collection is None else written


def batch_index(
    paths: Iterable[str | os.PathLike[str]],
    *,
    collection: str,
    chunker: Chunker,
    settings: Settings,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    batch_size: int = 64,
    task_bytes: int = TASK_BYTES,
    ray_address: str | None = None,
    progress: Callable[[IndexProgress], None] | None = None,
) -> IngestReport:
    """Index ``paths`` into ``collection`` with Ray; see the module docstring.

    ``settings`` gives ``embedding_model`` (None: BM25 only), ``device``/``dtype`` and the
    store (``qdrant_url`` + ``qdrant_api_key``, else embedded Qdrant in ``data_dir``).

    Example:
        >>> batch_index(["docs/"], collection="docs", chunker=chunker,
        ...             settings=Settings(data_dir="qdrant/")).added  # doctest: +SKIP
        1234
    """
    from finerank.retrieval.documents import update_document_index
    from finerank.retrieval.ingest import collection_spec, iter_files

    started = time.perf_counter()
    if batch_size < 1 or actors < 1:
        raise InvalidInputError("batch_size and actors must be at least 1")
    if gpus_per_actor > 0 and settings.device == "auto":
        settings = settings.model_copy(update={"device": "cuda"})
    settings = absolute_paths(settings)
    files = iter_files(paths)
    store = open_store(settings)  # fails early on a locked local directory
    min_free = settings.min_free_disk_mb * 1024 * 1024
    workers: list[Any] = []
    try:
        ensure_ray(ray_address)
        ray = import_ray()
        chunk_task = ray.remote(num_returns=3)(_chunk_files)
        outputs = [chunk_task.remote(group, chunker) for group in group_files(files, task_bytes)]
        worker_cls = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)(EmbedWorker)
        workers = [worker_cls.remote(settings) for _ in range(actors)]  # load while chunking
        summaries: list[_ChunkSummary] = ray.get([summary for _, summary, _ in outputs])

        report = IngestReport(documents=sum(s.documents for s in summaries))
        by_file: dict[str, set[str]] = {str(f): set() for f in files}
        for summary in summaries:
            for file, chunk_id in summary.ids:
                by_file.setdefault(file, set()).add(chunk_id)
        report.files = len(by_file)
        report.chunks = sum(len(s.ids) for s in summaries)
        report.empty_files = [name for name, ids in by_file.items() if not ids]
        name, dimension, source = ray.get(workers[0].identity.remote())
        identity = SimpleNamespace(name=name, dimension=dimension, source=source)
        if store.exists(collection):
            spec = collection_spec(chunker, identity if name else None, avg_doc_length=1.0)
        else:
            # BM25's average length over every chunk, as ingest() computes it for a new
            # collection: mean analyzed terms, at least 1.
            terms = sum(s.terms for s in summaries)
            average = max(1.0, terms / report.chunks) if report.chunks else 1.0
            spec = collection_spec(chunker, identity if name else None, avg_doc_length=average)
        spec = store.ensure(collection, spec)
        existing = store.ids_by_file(collection)
        stale: list[str] = []
        pending_count = 0
        for file, ids in by_file.items():
            old = existing.get(file, set())
            if old == ids:
                report.unchanged_files += bool(ids)  # as ingest(): an empty file is not "unchanged"
            pending_count += len(ids - old)
            stale.extend(sorted(old - ids))

        remote_write = None if store.is_local else collection
        in_flight: dict[Any, int] = {}
        for index, ((records, _, _), summary) in enumerate(zip(outputs, summaries, strict=True)):
            task_files = {file for file, _ in summary.ids}
            skip = set().union(*(existing.get(file, set()) for file in task_files))
            if all(cid in skip for _, cid in summary.ids):
                continue  # nothing new in these files
            worker = workers[index % len(workers)]
            ref = worker.points.remote(records, skip, spec, remote_write, batch_size)
            in_flight[ref] = len(summary.ids)
            if len(in_flight) >= 2 * len(workers):  # bound the points waiting in memory
                report.added += _collect_one(
                    ray, in_flight, store, collection, batch_size, min_free
                )
                _report(progress, report.added, pending_count, started)
        while in_flight:
            report.added += _collect_one(ray, in_flight, store, collection, batch_size, min_free)
            _report(progress, report.added, pending_count, started)
        report.deleted = store.delete_chunks(collection, stale)
        if report.added or report.deleted:
            store.optimize(collection)
        task_of = {file: i for i, s in enumerate(summaries) for file, _ in s.ids}

        def file_counts(names: Sequence[str]) -> dict[str, list[TermCounts]]:
            tasks = sorted({task_of[name] for name in names})
            terms = dict(zip(tasks, ray.get([outputs[i][2] for i in tasks]), strict=True))
            return {name: [terms[task_of[name]][name]] for name in names}

        report.documents_indexed = update_document_index(
            store, collection, by_file, file_counts, had_chunks=bool(existing)
        )
    finally:
        for worker in workers:  # free their CPUs / GPUs (and models) now
            import_ray().kill(worker)
        store.close()
    report.seconds = time.perf_counter() - started
    return report


def _collect_one(
    ray,
    in_flight: dict[Any, int],
    store: VectorStore,
    collection: str,
    batch_size: int,
    min_free_bytes: int,
) -> int:
    """Wait for one worker result; upsert it here when the workers could not (keeping the
    disk's ``min_free_bytes``, as ingest does)."""
    from finerank.retrieval.storage import check_free_space, storage_errors

    [ready], _ = ray.wait(list(in_flight), num_returns=1)
    in_flight.pop(ready)
    result = ray.get(ready)
    if isinstance(result, int):
        return result
    written = 0
    for first in range(0, len(result), batch_size):  # one upsert per batch, as ingest does
        check_free_space(store, min_free_bytes)
        with storage_errors(store):
            written += store.upsert(collection, result[first : first + batch_size])
    return written


def _report(progress, written: int, pending: int, started: float) -> None:
    if progress is not None:
        progress(IndexProgress(written, pending, time.perf_counter() - started))
