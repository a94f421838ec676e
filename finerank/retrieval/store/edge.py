"""The embedded store: Qdrant Edge (the Qdrant engine in-process) in a data directory.

Layout of ``data_dir``::

    .finerank.lock          one finerank process at a time (flock)
    edge/<name>/            one Edge shard per collection (WAL, segments, edge_config.json)
    edge/<name>/finerank.json   the collection's finerank metadata, written last
    meta.json, collection/  an older finerank's qdrant-client local-mode data, if any
                            (detected; ``finerank collections migrate NAME`` converts it)

Each shard has the sparse vector ``bm25`` with the IDF modifier and, when the collection has
an embedding model, the dense vector ``dense`` (cosine, HNSW once a segment is past the
indexing threshold, exact scan below it). Payload indexes: ``file`` and ``source`` (keyword)
from the start, and every metadata field the first time a query filters on it. Updates are
written to the shard's write-ahead log before they return, so a process killed mid-ingest
leaves whole batches; :meth:`EdgeStore.optimize` (called after each ingest) builds the
indexes and merges segments, and :meth:`EdgeStore.close` flushes.

A collection directory without ``finerank.json`` is an interrupted create or migration: it
is not listed and is replaced by the next create.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from finerank.errors import ConflictError, InvalidInputError, NotFoundError
from finerank.retrieval.store.base import (
    DENSE,
    DOCUMENTS_SUFFIX,
    INDEXED_AT_CREATION,
    SPARSE,
    CollectionSpec,
    FilterClause,
    Scored,
    Search,
    StoredPoint,
    VectorStore,
    as_floats,
    check_collection_name,
    index_kind,
    is_collection_name,
    point_id,
)

METADATA_FILE = "finerank.json"
LOCK_FILE = ".finerank.lock"
EDGE_DIR = "edge"
# HNSW: Qdrant's defaults, stated. Segments under the indexing threshold (KB of vectors) are
# searched exactly; above it they get an HNSW graph, whose search is itself exact under
# full_scan_threshold (KB).
HNSW_M, HNSW_EF_CONSTRUCT, FULL_SCAN_THRESHOLD_KB = 16, 100, 10_000
INDEXING_THRESHOLD_KB = 10_000
# Payload keys kept in memory for every point a query has returned: the search service's
# document-context pass asks 1,000 hits for their file, and reading 1,000 payloads from
# Qdrant (each whole, to pick two keys) costs about 8 ms; from memory it is free after the
# first time. About 0.3 KB per point seen.
CACHED_FIELDS = ("chunk_id", "file", "source")
# the same for a document index's points (VectorStore.query_documents asks for these)
DOCUMENT_CACHED_FIELDS = ("file", "chunks")


def _edge():
    import qdrant_edge

    return qdrant_edge


def _edge_config(spec: CollectionSpec):
    q = _edge()
    vectors = None
    if spec.dimension:
        vectors = {DENSE: q.EdgeVectorParams(size=spec.dimension, distance=q.Distance.Cosine)}
    return q.EdgeConfig(
        vectors=vectors,
        sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        hnsw_config=q.HnswIndexConfig(
            m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
        ),
        optimizers=q.EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB),
    )


def edge_filter(clauses: tuple[FilterClause, ...]):
    """Qdrant Edge ``Filter``: every clause must match, each by any of its values."""
    if not clauses:
        return None
    q = _edge()
    must = []
    for clause in clauses:
        should = [q.FieldCondition(key=clause.path, match=q.MatchAny(list(clause.strings)))]
        if clause.integers:
            should.append(
                q.FieldCondition(key=clause.path, match=q.MatchAny(list(clause.integers)))
            )
        must.append(q.Filter(should=should))
    return q.Filter(must=must)


def _request(search: Search, *, payload: bool = True):
    q = _edge()
    if search.sparse is not None:
        vector = q.SparseVector(search.sparse.indices, search.sparse.values)
        query = q.Query.Nearest(vector, using=SPARSE)
    else:
        query = q.Query.Nearest(search.dense, using=DENSE)
    return q.QueryRequest(
        limit=search.limit,
        query=query,
        filter=edge_filter(search.filter),
        with_payload=(list(search.fields) if search.fields is not None else True)
        if payload
        else False,
    )


def _cache_keys(name: str) -> tuple[str, ...]:
    return DOCUMENT_CACHED_FIELDS if name.endswith(DOCUMENTS_SUFFIX) else CACHED_FIELDS


def _cached(payload: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: payload[key] for key in keys if key in payload}


class _DirectoryLock:
    """An exclusive, non-blocking lock on ``path`` held while the store is open."""

    def __init__(self, path: Path):
        self._file = open(path, "a+")  # noqa: SIM115 - held until release()
        try:
            import fcntl
        except ImportError:  # Windows: Qdrant Edge's own WAL lock still guards each shard
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise

    def release(self) -> None:
        self._file.close()  # closing drops the flock


class EdgeStore(VectorStore):
    """Qdrant Edge shards in ``data_dir`` (one per collection); see the module docstring.

    One process at a time per directory (stop the server before indexing with the CLI into
    the same directory, or index through the server's API).

    Example:
        >>> store = EdgeStore("edge-demo")
        >>> store.list_collections(), store.legacy_collections()
        ([], [])
        >>> EdgeStore("edge-demo")
        Traceback (most recent call last):
        ...
        finerank.errors.ConflictError: the Qdrant data directory edge-demo is in use by ...
        >>> store.close()
    """

    engine = "qdrant-edge"

    def __init__(self, data_dir: str | os.PathLike[str], *, temporary: bool = False):
        self.root = Path(data_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)
        self._temporary = temporary
        if temporary:  # also removed when a store nobody closed is collected, or at exit
            self._remove_root = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        try:
            self._lock = _DirectoryLock(self.root / LOCK_FILE)
        except OSError as exc:
            raise ConflictError(
                f"the Qdrant data directory {self.root} is in use by another finerank process "
                f"({exc.strerror or exc}); stop it, pass another --data-dir, or use a Qdrant "
                "server (--qdrant-url)"
            ) from None
        self._edge_root = self.root / EDGE_DIR
        self._edge_root.mkdir(exist_ok=True)
        self._shards: dict[str, Any] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._indexed: dict[str, set[str]] = {}
        # collection -> point id -> the CACHED_FIELDS of its payload (see there)
        self._documents: dict[str, dict[uuid.UUID, dict[str, Any]]] = {}
        self._mutex = threading.RLock()
        self._closed = False

    @classmethod
    def temporary(cls) -> EdgeStore:
        """A store in a fresh temporary directory, deleted on :meth:`close`."""
        return cls(tempfile.mkdtemp(prefix="finerank-edge-"), temporary=True)

    def _path(self, name: str) -> Path:
        # a collection, or its document index (edge/<name>~documents/)
        base = name.removesuffix(DOCUMENTS_SUFFIX)
        return self._edge_root / (check_collection_name(base) + name[len(base) :])

    # --- collections -----------------------------------------------------------------------

    def _collection_names(self) -> list[str]:
        return sorted(
            child.name
            for child in self._edge_root.iterdir()
            if (child / METADATA_FILE).is_file() and is_collection_name(child.name)
        )

    def _has_collection(self, name: str) -> bool:
        with self._mutex:
            return name in self._metadata or (self._path(name) / METADATA_FILE).is_file()

    def _read_metadata(self, name: str) -> Mapping[str, Any] | None:
        with self._mutex:
            if name not in self._metadata:
                path = self._path(name) / METADATA_FILE
                try:
                    self._metadata[name] = json.loads(path.read_text(encoding="utf-8"))
                except FileNotFoundError:
                    raise self._missing(name) from None
            return self._metadata[name]

    def _create_collection(self, name: str, spec: CollectionSpec) -> None:
        self.create_uncommitted(name, spec)
        self.commit(name, spec)

    def create_uncommitted(self, name: str, spec: CollectionSpec) -> None:
        """The shard of a new collection, not yet visible (no metadata): for writers that
        must finish before it appears (migration). :meth:`commit` makes it visible."""
        q = _edge()
        path = self._path(name)
        with self._mutex:
            self._check_open()
            if (path / METADATA_FILE).exists():
                raise ConflictError(f"collection {name!r} already exists")
            self._documents.pop(name, None)
            if path.exists():  # an interrupted create or migration
                self._close_shard(name)
                shutil.rmtree(path)
            shard = q.EdgeShard.create(str(path), _edge_config(spec))
            for key in INDEXED_AT_CREATION:
                shard.update(q.UpdateOperation.create_field_index(key, q.PayloadSchemaType.Keyword))
            self._shards[name] = shard
            self._indexed[name] = set(INDEXED_AT_CREATION)

    def commit(self, name: str, spec: CollectionSpec) -> None:
        """Flush the shard and write its metadata (atomically): the collection now exists."""
        with self._mutex:
            self._shard(name, uncommitted=True).flush()
            metadata = {**spec.to_metadata(), "engine": self.engine}
            path = self._path(name) / METADATA_FILE
            temporary = path.with_suffix(".tmp")
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(metadata, handle, ensure_ascii=False, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            self._metadata[name] = metadata

    def _drop_collection(self, name: str) -> None:
        with self._mutex:
            self._close_shard(name)
            self._metadata.pop(name, None)
            self._indexed.pop(name, None)
            self._documents.pop(name, None)
            path = self._path(name)
            # renamed first: a crash mid-delete leaves a hidden directory, not half a collection
            trash = self._edge_root / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def legacy_collections(self) -> list[str]:
        from finerank.retrieval.store.migrate import legacy_collection_names

        # a name in both formats (migrated with --keep-old) is the new one until deleted
        return [
            name for name in legacy_collection_names(self.root) if not self._has_collection(name)
        ]

    def _drop_legacy(self, name: str) -> None:
        from finerank.retrieval.store.migrate import delete_legacy_collection

        delete_legacy_collection(self.root, name)

    # --- shards ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the store is closed")

    def _shard(self, name: str, *, uncommitted: bool = False):
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        with self._mutex:
            self._check_open()
            shard = self._shards.get(name)
            if shard is None:
                if not uncommitted and not self._has_collection(name):
                    raise self._missing(name)
                try:
                    shard = _edge().EdgeShard.load(str(self._path(name)))
                except Exception as exc:  # the Rust error, e.g. a WAL locked elsewhere
                    raise ConflictError(
                        f"cannot open collection {name!r} in {self.root}: {exc}"
                    ) from None
                self._shards[name] = shard
            return shard

    def _close_shard(self, name: str) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.flush()
            shard.close()

    def _count(self, name: str) -> int:
        return self._shard(name).count(_edge().CountRequest(exact=True))

    def optimize(self, name: str) -> None:
        """Run Qdrant's optimizers until none plans more (HNSW, sparse index, merges), then
        flush."""
        shard = self._shard(name)
        shard.optimize()
        shard.flush()

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            for name in list(self._shards):
                self._close_shard(name)
            self._lock.release()
            if self._temporary:
                self._remove_root()

    # --- points ----------------------------------------------------------------------------

    def _scroll(
        self, name: str, *, fields: list[str] | None, vectors: bool, page: int = 10_000
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        q = _edge()
        shard = self._shard(name)
        offset = None
        while True:
            records, offset = shard.scroll(
                q.ScrollRequest(
                    offset=offset,
                    limit=page,
                    with_payload=fields if fields is not None else True,
                    with_vector=vectors,
                )
            )
            for record in records:
                yield dict(record.payload or {}), (record.vector if vectors else None)
            if offset is None:
                return

    def _retrieve(
        self, name: str, ids: list[str], *, fields: list[str] | None, vectors: bool
    ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        records = self._shard(name).retrieve(
            ids,
            with_payload=fields if fields is not None else True,
            with_vector=[SPARSE] if vectors else False,
        )
        return [
            (dict(record.payload or {}), record.vector if vectors else None) for record in records
        ]

    def _write(self, name: str, points: list[StoredPoint]) -> None:
        q = _edge()
        structs = []
        for point in points:
            vectors: dict[str, Any] = {
                SPARSE: q.SparseVector(point.sparse.indices, point.sparse.values)
            }
            if point.dense is not None:
                vectors[DENSE] = as_floats(point.dense)
            structs.append(q.Point(point_id(point.chunk_id), vectors, point.payload))
        cache = self._documents.get(name)
        if cache is not None:  # a point's file may change (a renamed file, same source)
            keys = _cache_keys(name)
            for point in points:
                cache[uuid.UUID(point_id(point.chunk_id))] = _cached(point.payload, keys)
        try:
            self._shard(name).update(q.UpdateOperation.upsert_points(structs))
        except (ConflictError, NotFoundError):
            raise
        except Exception as exc:  # a vector that does not fit the collection
            raise InvalidInputError(f"cannot write to collection {name!r}: {exc}") from None

    def _remove(self, name: str, ids: list[str]) -> None:
        self._shard(name).update(_edge().UpdateOperation.delete_points(ids))
        cache = self._documents.get(name)
        if cache is not None:
            for point in ids:
                cache.pop(uuid.UUID(point), None)

    # --- queries ---------------------------------------------------------------------------

    def _search(self, name: str, searches: list[Search]) -> list[list[Scored]]:
        q = _edge()
        shard = self._shard(name)
        # few-field searches within CACHED_FIELDS read no payload (see there)
        keys = set(_cache_keys(name))
        from_cache = [
            search.fields is not None and set(search.fields) <= keys for search in searches
        ]
        requests = [
            _request(search, payload=not cached)
            for search, cached in zip(searches, from_cache, strict=True)
        ]
        try:
            if len(requests) == 1:
                results = [shard.query(requests[0])]
            else:
                results = shard.query_batch(q.QueryBatchRequest(requests))
        except Exception as exc:  # e.g. a query vector of the wrong dimension
            raise InvalidInputError(f"cannot search collection {name!r}: {exc}") from None
        return [
            self._from_cache(name, search.fields, points)
            if cached
            else [(point.score, point.payload or {}) for point in points]
            for search, cached, points in zip(searches, from_cache, results, strict=True)
        ]

    def _from_cache(self, name: str, fields: tuple[str, ...], points) -> list[Scored]:
        """Hits with the ``fields`` (all in CACHED_FIELDS, or DOCUMENT_CACHED_FIELDS for a
        document index) of their payloads, from memory; points not seen before are read once."""
        keys = _cache_keys(name)
        cache = self._documents.setdefault(name, {})
        ids = [point.id for point in points]  # uuid.UUID objects, hashed by their int
        missing = [point for point in ids if point not in cache]
        if missing:
            for record in self._shard(name).retrieve(
                missing, with_payload=list(keys), with_vector=False
            ):
                cache[record.id] = _cached(record.payload or {}, keys)
        every = set(fields) >= set(keys)
        scored: list[Scored] = []
        for point, key in zip(points, ids, strict=True):
            entry = cache.get(key)
            if entry is not None:  # None: deleted since the search
                payload = dict(entry) if every else {k: entry[k] for k in fields if k in entry}
                scored.append((point.score, payload))
        return scored

    def _prepare_filter(self, name: str, clauses: list[FilterClause]) -> None:
        """Index each filtered payload field on first use (keyword, or integer when the
        field holds integers); the index lives in the shard from then on."""
        q = _edge()
        shard = self._shard(name)
        with self._mutex:
            indexed = self._indexed.get(name)
            if indexed is None:
                indexed = self._indexed[name] = set(shard.info().payload_schema)
            for clause in clauses:
                if clause.path in indexed:
                    continue
                records, _ = shard.scroll(
                    q.ScrollRequest(
                        limit=1,
                        filter=q.Filter(must_not=[q.IsEmptyCondition(key=clause.path)]),
                        with_payload=True,
                    )
                )
                if not records:
                    continue  # no point has the field yet: look again next time
                kind = index_kind(records[0].payload or {}, clause.path)
                if kind is not None:
                    schema = getattr(q.PayloadSchemaType, kind.capitalize())
                    shard.update(q.UpdateOperation.create_field_index(clause.path, schema))
                indexed.add(clause.path)
