"""The store protocol both engines implement, and everything they share.

:class:`VectorStore` is finerank's whole view of a vector database: collections with
finerank's metadata, points with a BM25 sparse vector and an optional dense one, and
first-stage queries (``bm25`` | ``dense`` | ``hybrid``, optionally filtered, one at a time or
batched). The public methods live here, once, so both engines share their semantics:
validation, filter parsing, the hybrid plan, Python-side fusion where an engine has no native
equivalent, tie order and hit conversion. An engine implements only the small set of
``_``-prefixed primitives at the bottom of the class.

Engines: :class:`~finerank.retrieval.store.edge.EdgeStore` (Qdrant Edge embedded in a data
directory, the default) and :class:`~finerank.retrieval.store.client.ClientStore`
(qdrant-client against a Qdrant server or cluster).
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finerank.errors import ConflictError, InvalidInputError, NotFoundError
from finerank.retrieval.bm25 import ANALYZER_VERSION, SparseVector

Mode = Literal["bm25", "dense", "hybrid"]
MODES: tuple[str, ...] = ("bm25", "dense", "hybrid")
DENSE, SPARSE = "dense", "bm25"
SCHEMA_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
TOP_LEVEL_FIELDS = ("source", "file", "chunk_id")
# fields every collection indexes when it is created: ingest diffs by file, filters by source
INDEXED_AT_CREATION = ("file", "source")
# a collection's document index is a companion collection under this suffix; "~" is outside
# the names users can give (check_collection_name), so it can neither clash nor be listed
DOCUMENTS_SUFFIX = "~documents"
# documents read by id per request (an ingest's files' digests)
DOCUMENT_READ = 4096


def default_data_dir() -> Path:
    """``<user data dir>/finerank/qdrant`` (platformdirs).

    For example ``~/.local/share/finerank/qdrant`` on Linux.
    """
    from platformdirs import user_data_dir

    return Path(user_data_dir("finerank", appauthor=False)) / "qdrant"


def check_collection_name(name: str) -> str:
    """Collection names: letters, digits, ``_ . -``, at most 63 characters.

    The whole string must match (a trailing newline is not a valid name).

    Example:
        >>> check_collection_name("laws-2025")
        'laws-2025'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def is_collection_name(name: str) -> bool:
    """Whether ``name`` is one users can give (not, e.g., a document index's)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def document_index_name(name: str) -> str:
    """The companion collection that holds ``name``'s document index.

    Example:
        >>> document_index_name("laws")
        'laws~documents'
    """
    return check_collection_name(name) + DOCUMENTS_SUFFIX


def document_key(file: str) -> str:
    """A document's id in a document index (the MD5 of its file name, hex), as a chunk id is
    in its collection.

    Example:
        >>> point_id(document_key("laws/民法典.txt"))
        '58e77c3f-535a-127c-4c76-e944204adfc4'
    """
    return hashlib.md5(file.encode("utf-8")).hexdigest()


def point_id(chunk_id: str) -> str:
    """Qdrant point id (a UUID string) of a hex chunk id.

    Example:
        >>> point_id("a649e603bc091dd5f4d19f28b86ca7f1")
        'a649e603-bc09-1dd5-f4d1-9f28b86ca7f1'
    """
    return str(uuid.UUID(hex=chunk_id[:32]))


# --- collection metadata -----------------------------------------------------------------


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
    """A point to write (or read back): payload fields plus its vectors."""

    chunk_id: str
    payload: dict[str, Any]
    sparse: SparseVector
    dense: Sequence[float] | None = None


@dataclass
class DocumentPoint:
    """A document (every chunk of one ``file``) in a collection's document index: its BM25
    ``sparse`` vector, how many ``chunks`` it has, and the ``digest`` of their ids (what
    :func:`finerank.retrieval.documents.sync_document_index` compares to find stale ones)."""

    file: str
    sparse: SparseVector
    chunks: int
    digest: str


@dataclass(frozen=True)
class DocumentScore:
    """A document's BM25 score for one query in the document index, and its chunk count."""

    score: float
    chunks: int


@dataclass
class StoredHit:
    """A first-stage result: 1-based ``rank`` and the mode's score."""

    rank: int
    score: float
    chunk_id: str
    payload: dict[str, Any] = field(default_factory=dict)


# --- filters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterClause:
    """One ``{key: value(s)}`` filter entry: the payload path and the values it may take."""

    path: str
    strings: tuple[str, ...]
    integers: tuple[int, ...]


def parse_filters(filters: Mapping[str, Any] | None) -> tuple[FilterClause, ...]:
    """Validate ``{key: value}`` filters (a list means any of them); all keys must match.

    ``source``, ``file`` and ``chunk_id`` are top-level payload fields; every other key is
    looked up in the chunk metadata. A value that looks like an integer matches the number or
    the string (metadata read from files is not typed).

    Example:
        >>> parse_filters({"article_no": "63"})
        (FilterClause(path='metadata.article_no', strings=('63',), integers=(63,)),)
    """
    if not filters:
        return ()
    if not isinstance(filters, Mapping):
        raise InvalidInputError("filters must be a mapping of payload keys to values")
    clauses = []
    for key, raw in filters.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise InvalidInputError(f"invalid filter key {key!r}")
        path = key if key in TOP_LEVEL_FIELDS else f"metadata.{key}"
        values = raw if isinstance(raw, (list, tuple)) else [raw]
        strings: list[str] = []
        integers: list[int] = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InvalidInputError(f"filter {key!r}: values must be strings or integers")
            if isinstance(value, str):
                strings.append(value)
                if re.fullmatch(r"-?\d{1,18}", value.strip()):
                    integers.append(int(value))
            else:
                if not -(2**63) <= value < 2**63:  # what the store's integer index holds
                    raise InvalidInputError(
                        f"filter {key!r}: {value} is outside the 64-bit integer range"
                    )
                integers.append(value)
                strings.append(str(value))
        if not strings:
            raise InvalidInputError(f"filter {key!r}: give at least one value")
        clauses.append(
            FilterClause(path, tuple(dict.fromkeys(strings)), tuple(dict.fromkeys(integers)))
        )
    return tuple(clauses)


def build_filter(filters: Mapping[str, Any] | None):
    """qdrant-client ``Filter`` of ``{key: value}`` filters (see :func:`parse_filters`)."""
    from finerank.retrieval.store.client import client_filter

    return client_filter(parse_filters(filters))


def index_kind(payload: Mapping[str, Any], path: str) -> str | None:
    """``"keyword"`` or ``"integer"``: the payload index that fits ``path``'s value in
    ``payload`` (a list indexes its items); ``None`` for values filters cannot match."""
    value: Any = payload
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "keyword"
    return None


# --- fusion ------------------------------------------------------------------------------

Scored = tuple[float, dict[str, Any]]  # (score, payload) as an engine returns it

FusionMethod = Literal["rrf", "dbsf"]


@dataclass(frozen=True)
class FusionSpec:
    """How ``hybrid`` combines its BM25 and dense branches.

    Args:
        method: ``"rrf"``: reciprocal rank fusion as Qdrant computes it, the sum over the
            branches of ``1 / ((rank + 1) / w + k - 1)`` (0-based ``rank``; ``1 / (rank + k)``
            at weight 1); ``"dbsf"``: distribution-based score fusion, each branch's scores
            mapped by ``(s - (mean - 3 sd)) / (6 sd)`` (sample sd), then a weighted sum.
        rrf_k: RRF's rank constant (Qdrant's default 2; 60 in the RRF paper).
        weights: ``(sparse, dense)`` branch weights, both > 0.
        prefetch_limit: candidates each branch contributes; ``None`` = the query's limit.

    Fusion runs in finerank, the same code for both engines, over the two branches fetched
    in one engine batch: Qdrant and Qdrant Edge both have RRF (with ``k`` and weights) and DBSF,
    but each ranks equal branch scores by its internal point order (which even changes when
    segments are merged), so the fused order of tied candidates would differ between engines
    and over time; here a branch's equal scores are ranked by chunk id first. Neither engine
    has weighted DBSF.

    Example:
        >>> FusionSpec(method="rrf", rrf_k=60, weights=(1.0, 2.0)).is_default
        False
    """

    method: FusionMethod = "rrf"
    rrf_k: int = 2
    weights: tuple[float, float] = (1.0, 1.0)
    prefetch_limit: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "dbsf"):
            raise InvalidInputError(f"unknown fusion method {self.method!r}: use rrf or dbsf")
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, int) or self.rrf_k < 1:
            raise InvalidInputError(f"rrf_k must be a positive integer, got {self.rrf_k!r}")
        weights = tuple(self.weights) if isinstance(self.weights, (list, tuple)) else ()
        if len(weights) != 2 or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
            for w in weights
        ):
            raise InvalidInputError(
                f"fusion weights must be two positive numbers (sparse, dense), got {self.weights!r}"
            )
        object.__setattr__(self, "weights", (float(weights[0]), float(weights[1])))
        limit = self.prefetch_limit
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidInputError(f"prefetch_limit must be a positive integer, got {limit!r}")

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_FUSION

    def fuse(self, sparse: Sequence[Scored], dense: Sequence[Scored]) -> list[Scored]:
        """Fused ``(score, payload)`` list of the two branches, best first.

        Example:
            >>> a, b, c = ({"chunk_id": x} for x in "abc")
            >>> [(round(s, 3), p["chunk_id"]) for s, p in FusionSpec().fuse(
            ...     [(3.0, a), (1.0, b)], [(0.9, b), (0.5, c)])]
            [(0.833, 'b'), (0.5, 'a'), (0.333, 'c')]
        """
        branches = [sorted(sparse, key=_order), sorted(dense, key=_order)]
        if self.method == "rrf":
            return fuse_rrf(branches, self.rrf_k, self.weights)
        return fuse_dbsf(branches, self.weights)


DEFAULT_FUSION = FusionSpec()


def dbsf_normalize(scores: Sequence[float]) -> list[float]:
    """Qdrant's DBSF normalisation of one branch: ``mean +- 3 sd`` (sample sd) maps to 0..1;
    one score, or all equal, map to 0.5."""
    if len(scores) == 1:
        return [0.5]
    mean = sum(scores) / len(scores)
    variance = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
    if variance == 0:
        return [0.5] * len(scores)
    sd = math.sqrt(variance)
    low, high = mean - 3 * sd, mean + 3 * sd
    return [(s - low) / (high - low) for s in scores]


def fuse_rrf(
    branches: Sequence[Sequence[Scored]], k: int, weights: Sequence[float]
) -> list[Scored]:
    """Qdrant's weighted RRF of ranked ``(score, payload)`` lists: each branch adds
    ``1 / ((rank + 1) / weight + k - 1)`` (0-based rank), best first."""
    fused: dict[str, list[Any]] = {}
    for branch, weight in zip(branches, weights, strict=True):
        for rank, (_, payload) in enumerate(branch):
            entry = fused.setdefault(payload["chunk_id"], [0.0, payload])
            entry[0] += 1.0 / ((rank + 1) / weight + k - 1)
    return sorted(((score, payload) for score, payload in fused.values()), key=_order)


def fuse_dbsf(branches: Sequence[Sequence[Scored]], weights: Sequence[float]) -> list[Scored]:
    """Weighted DBSF of ranked ``(score, payload)`` lists, best first."""
    fused: dict[str, list[Any]] = {}
    for branch, weight in zip(branches, weights, strict=True):
        if not branch:
            continue
        for normalized, (_, payload) in zip(
            dbsf_normalize([score for score, _ in branch]), branch, strict=True
        ):
            entry = fused.setdefault(payload["chunk_id"], [0.0, payload])
            entry[0] += weight * normalized
    return sorted(((score, payload) for score, payload in fused.values()), key=_order)


def _order(item: tuple[float, dict[str, Any]]) -> tuple[float, str]:
    return (-item[0], item[1].get("chunk_id", ""))


# --- queries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreQuery:
    """One first-stage query for :meth:`VectorStore.query_batch` (arguments of ``query``)."""

    mode: Mode
    limit: int
    sparse: SparseVector | None = None
    dense: Sequence[float] | None = None
    filters: Mapping[str, Any] | None = None
    fusion: FusionSpec | None = None
    #: payload keys the hits carry (``chunk_id`` always); ``None``: the whole payload
    fields: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Search:
    """One request to the engine: the nearest ``limit`` points to ``sparse`` (BM25 with IDF)
    or to ``dense`` (cosine), among those matching every filter clause, with payloads."""

    limit: int
    filter: tuple[FilterClause, ...] = ()
    sparse: SparseVector | None = None
    dense: list[float] | None = None
    fields: tuple[str, ...] | None = None  # payload keys; None: all


_Plan = tuple[list[Search], Callable[[list[list[Scored]]], list[Scored]]]


def as_floats(vector: Sequence[float]) -> list[float]:
    """A list of Python floats (numpy and torch vectors convert in one C-level call)."""
    tolist = getattr(vector, "tolist", None)
    values = tolist() if callable(tolist) else list(vector)
    if values and not all(type(x) is float for x in values):
        values = [float(x) for x in values]
    return values


def _plan(query: StoreQuery) -> _Plan:
    """The engine searches of one query and how to turn their results into its hits."""
    if query.mode not in MODES:
        raise InvalidInputError(f"unknown mode {query.mode!r}: use one of {', '.join(MODES)}")
    limit = query.limit
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be a positive integer, got {limit!r}")
    clauses = parse_filters(query.filters)
    fields = None if query.fields is None else tuple(dict.fromkeys(("chunk_id", *query.fields)))
    fusion = query.fusion or DEFAULT_FUSION
    if not isinstance(fusion, FusionSpec):
        raise InvalidInputError("fusion must be a FusionSpec")
    sparse = query.sparse if query.sparse is not None and len(query.sparse.indices) else None
    dense = as_floats(query.dense) if query.dense is not None else None
    if query.mode == "dense" and dense is None:
        raise InvalidInputError("dense search needs a query embedding")
    if query.mode == "bm25" or (query.mode == "hybrid" and dense is None):
        if sparse is None:  # no index term in the query (only stop words): nothing matches
            return [], lambda _: []
        return [Search(limit, clauses, sparse=sparse, fields=fields)], _first
    if query.mode == "dense" or sparse is None:
        return [Search(limit, clauses, dense=dense, fields=fields)], _first
    candidates = fusion.prefetch_limit or limit

    def fuse(results: list[list[Scored]]) -> list[Scored]:
        return fusion.fuse(results[0], results[1])[:limit]

    branches = [
        Search(candidates, clauses, sparse=sparse, fields=fields),
        Search(candidates, clauses, dense=dense, fields=fields),
    ]
    return branches, fuse


def _first(results: list[list[Scored]]) -> list[Scored]:
    return results[0]


def legacy_message(name: str) -> str:
    return (
        f"collection {name!r} was written by an older finerank (qdrant-client local mode, "
        "a SQLite file per collection), which this finerank no longer reads for search: "
        f"run `finerank collections migrate {name}` to convert it to Qdrant Edge (payload and "
        "dense vectors are copied, BM25 vectors recomputed if need be), or delete it "
        f"(`finerank collections delete {name}`) and index the files again"
    )


# --- the protocol ------------------------------------------------------------------------


class VectorStore(ABC):
    """finerank's view of a Qdrant instance: embedded Qdrant Edge or a Qdrant server.

    Each point holds the named dense vector ``dense`` (cosine; absent in BM25-only
    collections), the sparse vector ``bm25`` (term weights without IDF; Qdrant applies IDF
    with its IDF modifier), and the payload ``chunk_id``, ``text``, ``context``, ``source``,
    ``file``, ``start``, ``end``, ``chunk_index``, ``metadata``. The collection's metadata
    records the embedding model, its dimension, the chunker configuration and the BM25
    parameters that built it.

    Open one with :func:`finerank.retrieval.store.open_store`.

    Example:
        >>> store = open_store(data_dir="/tmp/finerank-doc")  # doctest: +SKIP
        >>> [c.name for c in store.list_collections()]  # doctest: +SKIP
        ['laws']
    """

    #: where the data lives (a directory, a URL, ``:memory:``), for messages
    location: str = ""
    #: engine name for messages and benchmarks
    engine: str = ""

    # --- constructors kept for callers of the first store (thin aliases of open_store) ----

    @classmethod
    def open(
        cls,
        *,
        data_dir: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> VectorStore:
        """A Qdrant server when ``url`` is given, else embedded Qdrant Edge in ``data_dir``."""
        from finerank.retrieval.store import open_store

        return open_store(data_dir=data_dir, url=url, api_key=api_key)

    @classmethod
    def memory(cls) -> VectorStore:
        """Qdrant Edge in a temporary directory removed on :meth:`close` (tests, throwaway
        indexes); the same engine and code path as a data directory."""
        from finerank.retrieval.store.edge import EdgeStore

        return EdgeStore.temporary()

    @classmethod
    def from_settings(cls, settings) -> VectorStore:
        from finerank.retrieval.store import open_store

        return open_store(settings)

    @property
    def is_local(self) -> bool:
        """Whether the data is in this process (embedded), so other processes cannot write."""
        return True

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- collections -----------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists (also when it is an old-format collection to migrate)."""
        check_collection_name(name)
        return self._has_collection(name) or name in self.legacy_collections()

    def spec(self, name: str) -> CollectionSpec:
        """What built the collection; NotFoundError when it does not exist."""
        check_collection_name(name)
        if not self._has_collection(name):
            raise self._missing(name)
        return CollectionSpec.from_metadata(name, self._read_metadata(name))

    def _missing(self, name: str) -> Exception:
        """The error for a collection that is not there (or is there in the old format)."""
        if name in self.legacy_collections():
            return ConflictError(legacy_message(name))
        return NotFoundError(f"collection {name!r} does not exist (create it with finerank index)")

    def info(self, name: str) -> CollectionInfo:
        """Spec and exact point count; NotFoundError when the collection does not exist."""
        spec = self.spec(name)
        return CollectionInfo(name=name, spec=spec, points=self._count(name))

    def list_collections(self) -> list[CollectionInfo]:
        """finerank collections, sorted by name (others in the same Qdrant are skipped, and
        so are old-format ones: see :meth:`legacy_collections`)."""
        infos = []
        for name in self._collection_names():
            try:
                infos.append(self.info(name))
            except (ConflictError, InvalidInputError, NotFoundError):
                continue
        return sorted(infos, key=lambda info: info.name)

    def legacy_collections(self) -> list[str]:
        """Names of collections written by finerank's old store (local mode) that need
        ``finerank collections migrate NAME``; none on a server."""
        return []

    def create(self, name: str, spec: CollectionSpec) -> None:
        """A new empty collection (ConflictError when ``name`` is taken)."""
        if self.exists(name):
            self.spec(name)  # an old-format collection says how to migrate it
            raise ConflictError(f"collection {name!r} already exists")
        if self._has_collection(document_index_name(name)):  # left by an interrupted delete
            self._drop_collection(document_index_name(name))
        self._create_collection(name, spec)

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
                f"collection {name!r} was built with BM25 analyzer {stored.analyzer}; this "
                f"finerank writes {spec.analyzer}: rebuild the collection (finerank "
                f"collections delete {name}, then index it again)"
            )
        return stored

    def delete(self, name: str) -> None:
        """Delete a collection and its points (an old-format one too)."""
        check_collection_name(name)
        if self._has_collection(document_index_name(name)):  # first: never an orphan index
            self._drop_collection(document_index_name(name))
        if self._has_collection(name):
            self._drop_collection(name)
        elif name in self.legacy_collections():
            self._drop_legacy(name)
        else:
            raise NotFoundError(f"collection {name!r} does not exist")

    # --- points ----------------------------------------------------------------------------

    def ids_by_file(self, name: str) -> dict[str, set[str]]:
        """Chunk ids of every file in the collection (one scroll over the payload)."""
        self.spec(name)
        by_file: dict[str, set[str]] = {}
        for payload, _ in self._scroll(name, fields=["file", "chunk_id"], vectors=False):
            by_file.setdefault(payload.get("file") or "", set()).add(payload["chunk_id"])
        return by_file

    def iter_points(self, name: str, *, page: int = 1024) -> Iterator[StoredPoint]:
        """Every point with its payload and vectors, in point-id order (copies, migration)."""
        self.spec(name)
        for payload, vectors in self._scroll(name, fields=None, vectors=True, page=page):
            vectors = vectors or {}
            sparse = vectors.get(SPARSE)
            yield StoredPoint(
                chunk_id=payload["chunk_id"],
                payload=payload,
                sparse=SparseVector(list(sparse.indices), [float(v) for v in sparse.values])
                if sparse is not None
                else SparseVector([], []),
                dense=vectors.get(DENSE),
            )

    def sparse_vectors(self, name: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        """The stored BM25 vectors (term weights without IDF) of those of ``chunk_ids`` that
        exist, by chunk id: the feedback of pseudo-relevance feedback."""
        if not chunk_ids:
            return {}
        self.spec(name)
        vectors: dict[str, SparseVector] = {}
        ids = [point_id(c) for c in chunk_ids]
        for payload, stored in self._retrieve(name, ids, fields=["chunk_id"], vectors=True):
            sparse = (stored or {}).get(SPARSE)
            if sparse is not None:
                vectors[payload["chunk_id"]] = SparseVector(
                    list(sparse.indices), [float(v) for v in sparse.values]
                )
        return vectors

    def payloads(self, name: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The whole payloads of those of ``chunk_ids`` that exist, by chunk id (hits first
        searched with a few ``fields``)."""
        if not chunk_ids:
            return {}
        self.spec(name)
        found = self._retrieve(name, [point_id(c) for c in chunk_ids], fields=None, vectors=False)
        return {payload["chunk_id"]: payload for payload, _ in found}

    def upsert(self, name: str, points: Iterable[StoredPoint]) -> int:
        """Write points (one atomic batch: a killed process leaves all or none of it)."""
        batch = list(points)
        if batch:
            self._write(name, batch)
        return len(batch)

    def delete_chunks(self, name: str, chunk_ids: Iterable[str]) -> int:
        ids = [point_id(chunk_id) for chunk_id in chunk_ids]
        if ids:
            self._remove(name, ids)
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
        fusion: FusionSpec | None = None,
    ) -> list[StoredHit]:
        """First-stage recall: BM25, dense, or both fused (``fusion``; default RRF, k 2).

        ``hybrid`` without a dense vector is BM25; with a query that has no index term, dense.
        Equal scores are ordered by chunk id, so both engines return the same order.

        Example:
            >>> hits = store.query("laws", mode="bm25", limit=10,
            ...                    sparse=Bm25Encoder.query_vector("罚款"))  # doctest: +SKIP
        """
        return self.query_batch(
            name,
            [StoreQuery(mode, limit, sparse=sparse, dense=dense, filters=filters, fusion=fusion)],
        )[0]

    def query_batch(self, name: str, queries: Sequence[StoreQuery]) -> list[list[StoredHit]]:
        """Many queries in one engine call (planned together); results in query order."""
        check_collection_name(name)
        plans = [_plan(query) for query in queries]
        searches = [search for plan, _ in plans for search in plan]
        clauses = {clause for search in searches for clause in search.filter}
        if clauses:
            self._prepare_filter(name, sorted(clauses, key=lambda c: c.path))
        results = self._search(name, searches) if searches else []
        out: list[list[StoredHit]] = []
        position = 0
        for plan, combine in plans:
            scored = combine(results[position : position + len(plan)]) if plan else []
            position += len(plan)
            out.append(
                [
                    StoredHit(rank, float(score), payload["chunk_id"], payload)
                    for rank, (score, payload) in enumerate(sorted(scored, key=_order), start=1)
                ]
            )
        return out

    # --- the document index ----------------------------------------------------------------
    # One point per document (all chunks of one file) in a companion collection, with a BM25
    # vector over the whole document; its IDF is over documents. Kept in step with the chunks
    # by finerank.retrieval.documents.sync_document_index (every ingest ends with it).

    def has_document_index(self, name: str) -> bool:
        """Whether ``name`` has its document index (collections written before it have not,
        until their next ingest or migration builds it)."""
        return self._has_collection(document_index_name(name))

    def create_document_index(self, name: str) -> None:
        """An empty document index for ``name`` (sparse vectors only, IDF modifier, BM25
        with ``b`` 0: a document's length is not held against it)."""
        spec = self.spec(name)
        index = document_index_name(name)
        if not self._has_collection(index):
            self._create_collection(
                index,
                CollectionSpec(None, None, {"document_index_of": name}, 1.0, k1=spec.k1, b=0.0),
            )

    def document_digests(self, name: str, files: Sequence[str] | None = None) -> dict[str, str]:
        """``file -> digest`` of every document in the index (one scroll), or of those of
        ``files`` that are in it (read by id: costs what ``files`` are, not the index);
        empty without an index."""
        if not self.has_document_index(name):
            return {}
        index = document_index_name(name)
        if files is None:
            found = self._scroll(index, fields=["file", "digest"], vectors=False)
        else:
            ids = [point_id(document_key(file)) for file in files]
            found = (
                record
                for first in range(0, len(ids), DOCUMENT_READ)
                for record in self._retrieve(
                    index,
                    ids[first : first + DOCUMENT_READ],
                    fields=["file", "digest"],
                    vectors=False,
                )
            )
        return {payload["file"]: payload.get("digest", "") for payload, _ in found}

    def iter_documents(self, name: str) -> Iterator[DocumentPoint]:
        """Every document of ``name``'s document index with its vector (none without one)."""
        if not self.has_document_index(name):
            return
        for payload, vectors in self._scroll(document_index_name(name), fields=None, vectors=True):
            sparse = (vectors or {}).get(SPARSE)
            yield DocumentPoint(
                payload["file"],
                SparseVector(list(sparse.indices), [float(v) for v in sparse.values])
                if sparse is not None
                else SparseVector([], []),
                int(payload.get("chunks", 0)),
                str(payload.get("digest", "")),
            )

    def write_documents(self, name: str, documents: Sequence[DocumentPoint]) -> int:
        """Write (or replace) documents in ``name``'s document index (created if need be)."""
        if not documents:
            return 0
        self.create_document_index(name)
        self._write(
            document_index_name(name),
            [
                StoredPoint(
                    document_key(d.file),
                    {"file": d.file, "chunks": d.chunks, "digest": d.digest},
                    d.sparse,
                )
                for d in documents
            ],
        )
        return len(documents)

    def delete_documents(self, name: str, files: Iterable[str]) -> int:
        """Remove documents from ``name``'s document index."""
        ids = [point_id(document_key(file)) for file in files]
        if ids and self.has_document_index(name):
            self._remove(document_index_name(name), ids)
        return len(ids)

    def query_documents(
        self, name: str, queries: Sequence[SparseVector | None], limit: int
    ) -> list[dict[str, DocumentScore]]:
        """The best ``limit`` documents of each BM25 query (one engine batch), ``file ->``
        :class:`DocumentScore`; empty dicts where the collection has no document index."""
        out: list[dict[str, DocumentScore]] = [{} for _ in queries]
        wanted = [i for i, q in enumerate(queries) if q is not None and len(q.indices)]
        if not wanted:
            return out
        try:  # no existence check first: that would be one more round trip to a server
            results = self._search(
                document_index_name(name),
                [Search(limit, sparse=queries[i], fields=("file", "chunks")) for i in wanted],
            )
        except NotFoundError:
            return out
        for i, scored in zip(wanted, results, strict=True):
            out[i] = {
                payload["file"]: DocumentScore(float(score), int(payload.get("chunks", 0)))
                for score, payload in scored
                if "file" in payload
            }
        return out

    def optimize_document_index(self, name: str) -> None:
        """:meth:`optimize` for ``name``'s document index (after it was rebuilt)."""
        if self.has_document_index(name):
            self.optimize(document_index_name(name))

    # --- maintenance -----------------------------------------------------------------------

    def optimize(self, name: str) -> None:  # noqa: B027 - optional for engines
        """Build indexes and merge segments after an ingest (a server does it by itself)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release everything (embedded: the directory lock)."""

    # --- engine primitives -----------------------------------------------------------------

    @abstractmethod
    def _collection_names(self) -> list[str]: ...

    @abstractmethod
    def _has_collection(self, name: str) -> bool: ...

    @abstractmethod
    def _read_metadata(self, name: str) -> Mapping[str, Any] | None: ...

    @abstractmethod
    def _create_collection(self, name: str, spec: CollectionSpec) -> None: ...

    @abstractmethod
    def _drop_collection(self, name: str) -> None: ...

    def _drop_legacy(self, name: str) -> None:
        raise NotFoundError(f"collection {name!r} does not exist")

    @abstractmethod
    def _count(self, name: str) -> int: ...

    @abstractmethod
    def _scroll(
        self, name: str, *, fields: list[str] | None, vectors: bool, page: int = 10_000
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(payload, vectors) of every point; ``vectors`` maps ``bm25`` to an object with
        ``indices``/``values`` and ``dense`` to a list of floats."""

    @abstractmethod
    def _retrieve(
        self, name: str, ids: list[str], *, fields: list[str] | None, vectors: bool
    ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(payload ``fields``, or all of it for ``None``; sparse vector when ``vectors``) of
        the points ``ids`` that exist; vectors as in :meth:`_scroll`."""

    @abstractmethod
    def _write(self, name: str, points: list[StoredPoint]) -> None: ...

    @abstractmethod
    def _remove(self, name: str, ids: list[str]) -> None: ...

    @abstractmethod
    def _search(self, name: str, searches: list[Search]) -> list[list[Scored]]:
        """Run the searches (one batch where the engine can) with payloads; raise
        ``self._missing(name)`` when the collection does not exist."""

    def _prepare_filter(self, name: str, clauses: list[FilterClause]) -> None:  # noqa: B027
        """Create payload indexes for filtered fields (engines that have them)."""
