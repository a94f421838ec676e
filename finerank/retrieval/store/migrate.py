"""Collections of finerank's first store (qdrant-client local mode) in a data directory.

That store kept ``meta.json`` and ``collection/<name>/storage.sqlite`` in the data directory
and searched by brute force in Python. The Edge store detects such collections (by their
finerank metadata in ``meta.json``), refuses to search or extend them with a message naming
the way forward, and :func:`migrate_collection` converts one: every point is copied with its
vectors and payload as they are (same ids), so search results are unchanged, except that BM25
vectors written by an older analyzer are computed again from each point's text (payload
``context`` + ``text``, what ingest indexed) with this finerank's analyzer, and the
collection's BM25 average length with them: the dense vectors, the expensive part, are kept.
The copy becomes visible only once complete; an interrupted migration is simply run again.
The migrated collection then gets its document index (which the old store had not), built
from the copied chunks (:mod:`finerank.retrieval.documents`).

Example:
    >>> from finerank.retrieval.store import open_store
    >>> with open_store(data_dir="~/.local/share/finerank/qdrant") as store:  # doctest: +SKIP
    ...     print(migrate_collection(store, "laws").summary())
    laws: 208 points copied to Qdrant Edge in 0.4 s (old copy deleted)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from finerank.errors import ConflictError, InvalidInputError, NotFoundError
from finerank.retrieval.bm25 import ANALYZER_VERSION, Bm25Encoder, average_length

LEGACY_META = "meta.json"


def legacy_collection_names(root: str | os.PathLike[str]) -> list[str]:
    """finerank collections in the old local-mode layout under ``root`` (cheap: reads
    ``meta.json`` only)."""
    from finerank.retrieval.store.base import check_collection_name

    path = Path(root) / LEGACY_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except (OSError, ValueError):
        return []  # not a file local mode wrote: nothing of finerank's to migrate
    names = []
    collections = meta.get("collections") if isinstance(meta, dict) else None
    for name, config in (collections or {}).items():
        metadata = config.get("metadata") if isinstance(config, dict) else None
        if not isinstance(metadata, dict) or "finerank_schema" not in metadata:
            continue
        try:
            names.append(check_collection_name(name))
        except InvalidInputError:
            continue
    return sorted(names)


def _open_legacy(root: Path):
    from finerank.retrieval.store.client import ClientStore

    try:
        return ClientStore.local(root)
    except ConflictError:
        raise ConflictError(
            f"the old-format data in {root} is in use by another process (an older finerank?); "
            "stop it and run the command again"
        ) from None


def delete_legacy_collection(root: str | os.PathLike[str], name: str) -> None:
    """Delete an old-format collection (its SQLite file and its entry in ``meta.json``)."""
    if name not in legacy_collection_names(root):
        raise NotFoundError(f"collection {name!r} does not exist")
    legacy = _open_legacy(Path(root))
    try:
        legacy.client.delete_collection(name)
    finally:
        legacy.close()


def indexed_text(payload: Mapping[str, Any]) -> str:
    """The text ingest analyzed for a point (``Chunk.indexed_text``: context, newline, text)."""
    context, text = str(payload.get("context") or ""), str(payload.get("text") or "")
    return f"{context}\n{text}" if context else text


@dataclass
class MigrationReport:
    name: str
    points: int
    seconds: float
    deleted_old: bool
    #: the older BM25 analyzer whose vectors were computed again (None: copied as they were)
    reencoded_from: str | None = None

    def summary(self) -> str:
        old = "old copy deleted" if self.deleted_old else "old copy kept"
        bm25 = (
            f"; BM25 vectors of {self.reencoded_from} computed again with {ANALYZER_VERSION}"
            if self.reencoded_from
            else ""
        )
        return (
            f"{self.name}: {self.points} points copied to Qdrant Edge in {self.seconds:.1f} s "
            f"({old}{bm25})"
        )


def migrate_collection(
    store,
    name: str,
    *,
    keep_old: bool = False,
    batch_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy the old-format collection ``name`` in ``store``'s data directory into Qdrant Edge.

    Args:
        store: an open :class:`~finerank.retrieval.store.edge.EdgeStore` on the data directory.
        name: the collection.
        keep_old: keep the old SQLite copy (default: delete it once the new one is complete).
        batch_size: points per write.
        progress: called with (points copied, total) after each batch.

    Returns:
        A :class:`MigrationReport`.

    Raises:
        NotFoundError: no old-format collection ``name``.
        ConflictError: the collection already exists in the new format.
    """
    from finerank.retrieval.store.base import check_collection_name
    from finerank.retrieval.store.edge import EdgeStore

    if not isinstance(store, EdgeStore):
        raise InvalidInputError(
            "collections migrate converts old embedded data (a --data-dir); a Qdrant server's "
            "collections need no migration"
        )
    check_collection_name(name)
    started = time.perf_counter()
    if name not in store.legacy_collections():
        if store._has_collection(name):
            raise ConflictError(f"collection {name!r} is already in the Qdrant Edge format")
        raise NotFoundError(f"no old-format collection {name!r} in {store.root}")
    legacy = _open_legacy(store.root)
    try:
        spec = legacy.spec(name)
        encoder = None
        reencoded_from = None
        if spec.analyzer != ANALYZER_VERSION:  # term ids differ: analyze the texts again
            reencoded_from = spec.analyzer
            texts = (
                indexed_text(payload)
                for payload, _ in legacy._scroll(
                    name, fields=["text", "context"], vectors=False, page=batch_size
                )
            )
            spec = replace(spec, analyzer=ANALYZER_VERSION, avg_doc_length=average_length(texts))
            encoder = Bm25Encoder(spec.avg_doc_length, spec.k1, spec.b)
        total = legacy.info(name).points
        store.create_uncommitted(name, spec)
        copied = 0
        batch = []
        for point in legacy.iter_points(name, page=batch_size):
            if encoder is not None:
                point.sparse = encoder.document_vector(indexed_text(point.payload))
            batch.append(point)
            if len(batch) >= batch_size:
                copied += store.upsert(name, batch)
                batch = []
                if progress is not None:
                    progress(copied, total)
        copied += store.upsert(name, batch)
        if progress is not None:
            progress(copied, total)
        shard = store._shard(name, uncommitted=True)
        written = shard.count(_count_request())
        if copied != total or written != total:
            raise ConflictError(
                f"migrating {name!r}: {total} points in the old copy but {written} written; "
                "the old copy is untouched, run the command again"
            )
        shard.optimize()
        store.commit(name, spec)
        from finerank.retrieval.documents import sync_document_index

        sync_document_index(store, name)  # the document index, which the old store had not
        if not keep_old:
            legacy.client.delete_collection(name)
    finally:
        legacy.close()
    return MigrationReport(
        name,
        copied,
        time.perf_counter() - started,
        deleted_old=not keep_old,
        reencoded_from=reencoded_from,
    )


def _count_request():
    import qdrant_edge

    return qdrant_edge.CountRequest(exact=True)
