"""The server store: qdrant-client against a Qdrant server or cluster (``--qdrant-url``).

Same collection layout, payload and query semantics as the embedded Edge store (both share
:class:`~finerank.retrieval.store.base.VectorStore`): named vectors ``dense`` (cosine) and
``bm25`` (IDF modifier), finerank's metadata in the collection's ``metadata``, keyword
indexes on ``file`` and ``source``, and an index on each metadata field the first time a
query filters on it. Hybrid search is one ``query_batch_points`` call for its two branches,
fused by finerank as for Edge (see :class:`~finerank.retrieval.store.base.FusionSpec`).

qdrant-client's *local mode* (``QdrantClient(path=...)`` / ``":memory:"``) speaks the same
calls in pure Python: no Qdrant server can be installed on finerank's test machines, so the
shared store tests run this class against local mode as the server's stand-in. It is also
the engine of finerank's first store (the format ``finerank collections migrate`` reads).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from finerank.errors import ConflictError, InvalidInputError
from finerank.retrieval.store.base import (
    DENSE,
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
    point_id,
)


def client_filter(clauses: tuple[FilterClause, ...]):
    """qdrant-client ``Filter``: every clause must match, each by any of its values."""
    if not clauses:
        return None
    from qdrant_client import models

    must = []
    for clause in clauses:
        should = [
            models.FieldCondition(key=clause.path, match=models.MatchAny(any=list(clause.strings)))
        ]
        if clause.integers:
            should.append(
                models.FieldCondition(
                    key=clause.path, match=models.MatchAny(any=list(clause.integers))
                )
            )
        must.append(models.Filter(should=should))
    return models.Filter(must=must)


def _request(search: Search):
    from qdrant_client import models

    if search.sparse is not None:
        query: Any = models.SparseVector(indices=search.sparse.indices, values=search.sparse.values)
    else:
        query = search.dense
    return models.QueryRequest(
        query=query,
        using=SPARSE if search.sparse is not None else DENSE,
        limit=search.limit,
        filter=client_filter(search.filter),
        with_payload=list(search.fields) if search.fields is not None else True,
    )


class ClientStore(VectorStore):
    """A Qdrant server or cluster through qdrant-client (or its local mode; see module doc).

    Example:
        >>> store = ClientStore.connect("http://qdrant:6333", api_key=None)  # doctest: +SKIP
        >>> store = ClientStore.local()  # local mode in memory: the server's stand-in in tests
        >>> store.create("notes", CollectionSpec(None, None, {"name": "window"}, 10.0))
        >>> [c.name for c in store.list_collections()], store.is_local
        (['notes'], True)
        >>> store.close()
    """

    engine = "qdrant-client"

    def __init__(self, client, *, location: str):
        self.client = client
        self.location = location
        self._tuned: set[str] = set()
        self._indexed: dict[str, set[str]] = {}

    @classmethod
    def connect(cls, url: str, *, api_key: str | None = None) -> ClientStore:
        """A Qdrant server or cluster at ``url``."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(url=url, api_key=api_key), location=url)

    @classmethod
    def local(cls, path: str | os.PathLike[str] | None = None) -> ClientStore:
        """qdrant-client local mode in ``path`` (``None``: in memory): the server's stand-in
        in tests, and the format of finerank's first store."""
        from qdrant_client import QdrantClient

        if path is None:
            return cls(QdrantClient(location=":memory:"), location=":memory:")
        os.makedirs(path, exist_ok=True)
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:  # the local lock
            raise ConflictError(
                f"the Qdrant data directory {path} is in use by another process ({exc})"
            ) from exc
        return cls(client, location=str(path))

    @property
    def is_local(self) -> bool:
        return not self.location.startswith(("http://", "https://"))

    def close(self) -> None:
        self.client.close()

    # --- collections -----------------------------------------------------------------------

    def _collection_names(self) -> list[str]:
        names = []
        for description in self.client.get_collections().collections:
            try:
                names.append(check_collection_name(description.name))
            except InvalidInputError:
                continue  # not a name finerank would have created
        return names

    def _has_collection(self, name: str) -> bool:
        return self.client.collection_exists(name)

    def _read_metadata(self, name: str) -> Mapping[str, Any] | None:
        described = self.client.get_collection(name)
        return getattr(described.config, "metadata", None)

    def _create_collection(self, name: str, spec: CollectionSpec) -> None:
        from qdrant_client import models

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
            for key in INDEXED_AT_CREATION:
                self.client.create_payload_index(name, key, models.PayloadSchemaType.KEYWORD)
        self._indexed[name] = set(INDEXED_AT_CREATION)

    def _drop_collection(self, name: str) -> None:
        self.client.delete_collection(name)
        self._indexed.pop(name, None)
        self._tuned.discard(name)

    def _count(self, name: str) -> int:
        return self.client.count(name, exact=True).count

    # --- points ----------------------------------------------------------------------------

    def _scroll(
        self, name: str, *, fields: list[str] | None, vectors: bool, page: int = 10_000
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                name,
                limit=page,
                offset=offset,
                with_payload=fields if fields is not None else True,
                with_vectors=vectors,
            )
            for point in points:
                yield dict(point.payload or {}), (point.vector if vectors else None)
            if offset is None:
                return

    def _retrieve(
        self, name: str, ids: list[str], *, fields: list[str] | None, vectors: bool
    ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        records = self.client.retrieve(
            name,
            ids=ids,
            with_payload=fields if fields is not None else True,
            with_vectors=[SPARSE] if vectors else False,
        )
        return [
            (dict(record.payload or {}), record.vector if vectors else None) for record in records
        ]

    def _write(self, name: str, points: list[StoredPoint]) -> None:
        from qdrant_client import models

        structs = []
        for point in points:
            vectors: dict[str, Any] = {
                SPARSE: models.SparseVector(
                    indices=list(point.sparse.indices), values=list(point.sparse.values)
                )
            }
            if point.dense is not None:
                vectors[DENSE] = as_floats(point.dense)
            structs.append(
                models.PointStruct(
                    id=point_id(point.chunk_id), vector=vectors, payload=point.payload
                )
            )
        self._tune_local(name)
        self.client.upsert(name, points=structs, wait=True)

    def _tune_local(self, name: str) -> None:
        """Local mode commits one SQLite transaction per point; in WAL mode with
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

    def _remove(self, name: str, ids: list[str]) -> None:
        from qdrant_client import models

        self.client.delete(name, points_selector=models.PointIdsList(points=ids), wait=True)

    # --- queries ---------------------------------------------------------------------------

    def _search(self, name: str, searches: list[Search]) -> list[list[Scored]]:
        requests = [_request(search) for search in searches]
        try:
            if len(requests) == 1:
                r = requests[0]
                responses = [
                    self.client.query_points(
                        name,
                        query=r.query,
                        using=r.using,
                        query_filter=r.filter,
                        limit=r.limit,
                        with_payload=r.with_payload,
                    )
                ]
            else:
                responses = self.client.query_batch_points(name, requests=requests)
        except Exception:
            if not self.client.collection_exists(name):  # checked only on failure: no extra
                raise self._missing(name) from None  # round trip per query
            raise
        return [
            [(point.score, dict(point.payload or {})) for point in response.points]
            for response in responses
        ]

    def _prepare_filter(self, name: str, clauses: list[FilterClause]) -> None:
        """On a server, index each filtered payload field on first use (as Edge does)."""
        if self.is_local:
            return
        from qdrant_client import models

        indexed = self._indexed.get(name)
        if indexed is None:
            schema = self.client.get_collection(name).payload_schema or {}
            indexed = self._indexed[name] = set(schema)
        for clause in clauses:
            if clause.path in indexed:
                continue
            points, _ = self.client.scroll(
                name,
                limit=1,
                scroll_filter=models.Filter(
                    must_not=[
                        models.IsEmptyCondition(is_empty=models.PayloadField(key=clause.path))
                    ]
                ),
                with_payload=True,
            )
            if not points:
                continue
            kind = index_kind(points[0].payload or {}, clause.path)
            if kind is not None:
                schema_type = getattr(models.PayloadSchemaType, kind.upper())
                self.client.create_payload_index(name, clause.path, schema_type, wait=True)
            indexed.add(clause.path)
