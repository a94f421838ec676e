"""Qdrant storage of chunks: dense vectors, BM25 sparse vectors, payload, collection metadata.

One code path for both deployments: embedded local mode (a data directory; the default is
``<user data dir>/finerank/qdrant``) and a Qdrant server or cluster (``url`` + ``api_key``).

Each point holds the named dense vector ``dense`` (cosine; absent in BM25-only collections),
the sparse vector ``bm25`` (term weights without IDF; Qdrant applies IDF with
``Modifier.IDF``), and the payload ``chunk_id``, ``text``, ``context``, ``source``, ``file``,
``start``, ``end``, ``metadata``. The collection's metadata records the embedding model, its
dimension, the chunker configuration and the BM25 parameters that built it.

Example:
    >>> store = VectorStore.open(data_dir="/tmp/finerank-doc")  # doctest: +SKIP
    >>> [c.name for c in store.list_collections()]  # doctest: +SKIP
    ['laws']
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finerank.errors import ConflictError, InvalidInputError, NotFoundError
from finerank.retrieval.bm25 import ANALYZER_VERSION, SparseVector

Mode = Literal["bm25", "dense", "hybrid"]
MODES: tuple[str, ...] = ("bm25", "dense", "hybrid")
DENSE, SPARSE = "dense", "bm25"
SCHEMA_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
TOP_LEVEL_FIELDS = ("source", "file", "chunk_id")


def default_data_dir() -> Path:
    """``<user data dir>/finerank/qdrant`` (platformdirs).

    For example ``~/.local/share/finerank/qdrant`` on Linux.
    """
    from platformdirs import user_data_dir

    return Path(user_data_dir("finerank", appauthor=False)) / "qdrant"


def check_collection_name(name: str) -> str:
    """Collection names: letters, digits, ``_ . -``, at most 63 characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def point_id(chunk_id: str) -> str:
    """Qdrant point id (a UUID string) of a hex chunk id."""
    return str(uuid.UUID(hex=chunk_id[:32]))


@dataclass(frozen=True)
class CollectionSpec:
    """What built a collection; stored as the collection's metadata."""

    embedding_model: str | None
    dimension: int | None
    chunker: dict[str, Any]
    avg_doc_length: float
    k1: float = 1.2
    b: float = 0.75
    analyzer: str = ANALYZER_VERSION
    # where the embedding model was loaded from (a default for queries; not compared)
    embedding_source: str | None = field(default=None, compare=False)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "finerank_schema": SCHEMA_VERSION,
            "embedding_model": self.embedding_model,
            "embedding_source": self.embedding_source,
            "dimension": self.dimension,
            "chunker": self.chunker,
            "bm25": {
                "avg_doc_length": self.avg_doc_length,
                "k1": self.k1,
                "b": self.b,
                "analyzer": self.analyzer,
            },
        }

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any] | None) -> CollectionSpec:
        if not metadata or "finerank_schema" not in metadata:
            raise ConflictError(
                f"collection {name!r} was not created by finerank (no finerank metadata); "
                "use another collection name"
            )
        bm25 = metadata["bm25"]
        return cls(
            embedding_model=metadata.get("embedding_model"),
            dimension=metadata.get("dimension"),
            chunker=dict(metadata.get("chunker") or {}),
            avg_doc_length=float(bm25["avg_doc_length"]),
            k1=float(bm25["k1"]),
            b=float(bm25["b"]),
            analyzer=str(bm25["analyzer"]),
            embedding_source=metadata.get("embedding_source"),
        )


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    spec: CollectionSpec
    points: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the CLI and the HTTP API print."""
        return {
            "name": self.name,
            "points": self.points,
            "embedding_model": self.spec.embedding_model,
            "dimension": self.spec.dimension,
            "chunker": self.spec.chunker,
        }


@dataclass
class StoredPoint:
    """A point to write: payload fields plus its vectors."""

    chunk_id: str
    payload: dict[str, Any]
    sparse: SparseVector
    dense: Sequence[float] | None = None


@dataclass
class StoredHit:
    """A first-stage result: 1-based ``rank`` and the mode's score."""

    rank: int
    score: float
    chunk_id: str
    payload: dict[str, Any] = field(default_factory=dict)


def build_filter(filters: Mapping[str, Any] | None):
    """Qdrant filter from ``{key: value}`` (a list means any of them).

    ``source``, ``file`` and ``chunk_id`` are top-level payload fields; every other key is
    looked up in the chunk metadata. A value that looks like an integer matches the number or
    the string (metadata read from files is not typed).
    """
    if not filters:
        return None
    from qdrant_client import models

    must = []
    for key, raw in filters.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise InvalidInputError(f"invalid filter key {key!r}")
        path = key if key in TOP_LEVEL_FIELDS else f"metadata.{key}"
        values = raw if isinstance(raw, (list, tuple)) else [raw]
        options: list[Any] = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InvalidInputError(f"filter {key!r}: values must be strings or integers")
            options.append(value)
            if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
                options.append(int(value))
            elif isinstance(value, int):
                options.append(str(value))
        strings = [v for v in options if isinstance(v, str)]
        integers = [v for v in options if isinstance(v, int)]
        should = []
        if strings:
            should.append(models.FieldCondition(key=path, match=models.MatchAny(any=strings)))
        if integers:
            should.append(models.FieldCondition(key=path, match=models.MatchAny(any=integers)))
        must.append(models.Filter(should=should))
    return models.Filter(must=must)


class VectorStore:
    """finerank's view of a Qdrant instance (local directory or server)."""

    def __init__(self, client, *, location: str):
        self.client = client
        self.location = location
        self._tuned: set[str] = set()

    @classmethod
    def open(
        cls,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> VectorStore:
        """A Qdrant server when ``url`` is given, else embedded Qdrant in ``data_dir``.

        Embedded mode locks its directory: one process at a time (stop the server before
        indexing with the CLI into the same directory, or index through the server's API).
        """
        from qdrant_client import QdrantClient

        if url:
            return cls(QdrantClient(url=url, api_key=api_key), location=url)
        path = Path(data_dir) if data_dir else default_data_dir()
        path.mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:  # the local lock
            raise ConflictError(
                f"the Qdrant data directory {path} is in use by another finerank process "
                f"({exc}); stop it, pass another --data-dir, or use a Qdrant server (--qdrant-url)"
            ) from exc
        return cls(client, location=str(path))

    @classmethod
    def memory(cls) -> VectorStore:
        """Embedded Qdrant in memory (tests, throwaway indexes); same code path otherwise."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(location=":memory:"), location=":memory:")

    @classmethod
    def from_settings(cls, settings) -> VectorStore:
        return cls.open(
            data_dir=settings.data_dir, url=settings.qdrant_url, api_key=settings.qdrant_api_key
        )

    @property
    def is_local(self) -> bool:
        return not self.location.startswith(("http://", "https://"))

    def close(self) -> None:
        self.client.close()

    # --- collections -----------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return self.client.collection_exists(check_collection_name(name))

    def spec(self, name: str) -> CollectionSpec:
        """What built the collection; NotFoundError when it does not exist."""
        if not self.exists(name):
            raise NotFoundError(
                f"collection {name!r} does not exist (create it with finerank index)"
            )
        described = self.client.get_collection(name)
        return CollectionSpec.from_metadata(name, getattr(described.config, "metadata", None))

    def info(self, name: str) -> CollectionInfo:
        """Spec and exact point count; NotFoundError when the collection does not exist."""
        spec = self.spec(name)
        points = self.client.count(name, exact=True).count
        return CollectionInfo(name=name, spec=spec, points=points)

    def list_collections(self) -> list[CollectionInfo]:
        """finerank collections, sorted by name (others in the same Qdrant are skipped)."""
        infos = []
        for description in self.client.get_collections().collections:
            try:
                infos.append(self.info(description.name))
            except ConflictError:
                continue
        return sorted(infos, key=lambda info: info.name)

    def create(self, name: str, spec: CollectionSpec) -> None:
        from qdrant_client import models

        check_collection_name(name)
        vectors = {}
        if spec.dimension:
            vectors[DENSE] = models.VectorParams(
                size=spec.dimension, distance=models.Distance.COSINE
            )
        self.client.create_collection(
            name,
            vectors_config=vectors,
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata=spec.to_metadata(),
        )
        if not self.is_local:  # local mode has no payload indexes (and warns about them)
            for key in ("file", "source"):
                self.client.create_payload_index(name, key, models.PayloadSchemaType.KEYWORD)

    def ensure(self, name: str, spec: CollectionSpec) -> CollectionSpec:
        """Create the collection, or check that the existing one was built the same way.

        Returns the stored spec (its BM25 ``avg_doc_length`` wins over ``spec``'s).
        """
        if not self.exists(name):
            self.create(name, spec)
            return spec
        stored = self.spec(name)
        if stored.embedding_model != spec.embedding_model or stored.dimension != spec.dimension:
            raise ConflictError(
                f"collection {name!r} was built with embedding model "
                f"{stored.embedding_model!r} (dimension {stored.dimension}), not "
                f"{spec.embedding_model!r} (dimension {spec.dimension}); use the same model or "
                "another collection"
            )
        if stored.chunker != spec.chunker:
            raise ConflictError(
                f"collection {name!r} was built with chunker {stored.chunker}, not "
                f"{spec.chunker}; use the same chunker or another collection"
            )
        if stored.analyzer != spec.analyzer:
            raise ConflictError(
                f"collection {name!r} uses analyzer {stored.analyzer}; this finerank writes "
                f"{spec.analyzer}: rebuild the collection"
            )
        return stored

    def delete(self, name: str) -> None:
        if not self.exists(name):
            raise NotFoundError(f"collection {name!r} does not exist")
        self.client.delete_collection(name)

    # --- points ----------------------------------------------------------------------------

    def ids_by_file(self, name: str) -> dict[str, set[str]]:
        """Chunk ids of every file in the collection (one scroll over the payload)."""
        by_file: dict[str, set[str]] = {}
        offset = None
        while True:
            points, offset = self.client.scroll(
                name,
                limit=2048,
                offset=offset,
                with_payload=["file", "chunk_id"],
                with_vectors=False,
            )
            for point in points:
                payload = point.payload or {}
                by_file.setdefault(payload.get("file") or "", set()).add(payload["chunk_id"])
            if offset is None:
                return by_file

    def upsert(self, name: str, points: Iterable[StoredPoint]) -> int:
        from qdrant_client import models

        structs = []
        for point in points:
            vectors: dict[str, Any] = {
                SPARSE: models.SparseVector(
                    indices=point.sparse.indices, values=point.sparse.values
                )
            }
            if point.dense is not None:
                vectors[DENSE] = [float(x) for x in point.dense]
            structs.append(
                models.PointStruct(
                    id=point_id(point.chunk_id), vector=vectors, payload=point.payload
                )
            )
        if structs:
            self._tune_local(name)
            self.client.upsert(name, points=structs, wait=True)
        return len(structs)

    def _tune_local(self, name: str) -> None:
        """Embedded mode commits one SQLite transaction per point; in WAL mode with
        ``synchronous=NORMAL`` those commits skip the fsync (about 20x faster here) and the
        file still cannot be corrupted by a crash (the last commits may be lost)."""
        if name in self._tuned or not self.is_local:
            return
        self._tuned.add(name)
        collection = getattr(getattr(self.client, "_client", None), "collections", {}).get(name)
        connection = getattr(getattr(collection, "storage", None), "storage", None)
        if connection is None or not hasattr(connection, "execute"):
            return
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")

    def delete_chunks(self, name: str, chunk_ids: Iterable[str]) -> int:
        from qdrant_client import models

        ids = [point_id(chunk_id) for chunk_id in chunk_ids]
        if ids:
            self.client.delete(name, points_selector=models.PointIdsList(points=ids), wait=True)
        return len(ids)

    def query(
        self,
        name: str,
        *,
        mode: Mode,
        limit: int,
        sparse: SparseVector | None = None,
        dense: Sequence[float] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[StoredHit]:
        """First-stage recall: BM25, dense, or both fused by reciprocal rank (RRF)."""
        from qdrant_client import models

        query_filter = build_filter(filters)
        has_sparse = sparse is not None and len(sparse.indices) > 0
        sparse_query = (
            models.SparseVector(indices=sparse.indices, values=sparse.values)
            if has_sparse
            else None
        )
        dense_query = [float(x) for x in dense] if dense is not None else None
        if mode == "bm25" or (mode == "hybrid" and dense_query is None):
            if not has_sparse:
                return []
            response = self.client.query_points(
                name,
                query=sparse_query,
                using=SPARSE,
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            )
        elif mode == "dense" or not has_sparse:
            if dense_query is None:
                raise InvalidInputError("dense search needs a query embedding")
            response = self.client.query_points(
                name,
                query=dense_query,
                using=DENSE,
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            )
        elif mode == "hybrid":
            response = self.client.query_points(
                name,
                prefetch=[
                    models.Prefetch(
                        query=sparse_query, using=SPARSE, limit=limit, filter=query_filter
                    ),
                    models.Prefetch(
                        query=dense_query, using=DENSE, limit=limit, filter=query_filter
                    ),
                ],
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            )
        else:
            raise InvalidInputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        return [
            StoredHit(
                rank=rank,
                score=float(point.score),
                chunk_id=point.payload["chunk_id"],
                payload=dict(point.payload),
            )
            for rank, point in enumerate(response.points, start=1)
        ]
