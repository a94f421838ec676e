"""Qdrant storage of chunks: dense vectors, BM25 sparse vectors, payload, collection metadata.

Two engines behind one protocol (:class:`VectorStore`):

- embedded (the default): :class:`~finerank.retrieval.store.edge.EdgeStore`, Qdrant Edge
  (the Qdrant engine in-process) in a data directory (default
  ``<user data dir>/finerank/qdrant``);
- a Qdrant server or cluster: :class:`~finerank.retrieval.store.client.ClientStore`
  (qdrant-client, ``url`` + ``api_key``).

Both keep the same collection layout, payload and query semantics. Collections written by
finerank's first store (qdrant-client local mode) are detected and converted with
``finerank collections migrate NAME`` (:mod:`finerank.retrieval.store.migrate`).

Example:
    >>> with open_store(data_dir="qdrant-demo") as store:
    ...     store.create("notes", CollectionSpec(None, None, {"name": "window"}, 10.0))
    ...     [(c.name, c.points) for c in store.list_collections()], store.engine
    ([('notes', 0)], 'qdrant-edge')
"""

from __future__ import annotations

import os
from typing import Any

from finerank.retrieval.store.base import (
    DEFAULT_FUSION,
    DENSE,
    MODES,
    SCHEMA_VERSION,
    SPARSE,
    TOP_LEVEL_FIELDS,
    CollectionInfo,
    CollectionSpec,
    FilterClause,
    FusionSpec,
    Mode,
    StoredHit,
    StoredPoint,
    StoreQuery,
    VectorStore,
    build_filter,
    check_collection_name,
    default_data_dir,
    parse_filters,
    point_id,
)

__all__ = [
    "DEFAULT_FUSION",
    "DENSE",
    "MODES",
    "SCHEMA_VERSION",
    "SPARSE",
    "TOP_LEVEL_FIELDS",
    "CollectionInfo",
    "CollectionSpec",
    "FilterClause",
    "FusionSpec",
    "Mode",
    "StoreQuery",
    "StoredHit",
    "StoredPoint",
    "VectorStore",
    "build_filter",
    "check_collection_name",
    "default_data_dir",
    "open_store",
    "parse_filters",
    "point_id",
]


def open_store(
    settings: Any = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    url: str | None = None,
    api_key: str | None = None,
) -> VectorStore:
    """The configured store: a Qdrant server when a URL is set, else Qdrant Edge embedded in
    the data directory.

    Args:
        settings: a :class:`finerank.settings.Settings` (its ``data_dir``, ``qdrant_url``,
            ``qdrant_api_key``); keyword arguments given here take precedence.
        data_dir: embedded data directory (default: the user data dir, see
            :func:`default_data_dir`).
        url: Qdrant server or cluster URL.
        api_key: its API key.

    Returns:
        An open :class:`VectorStore`; close it (or use it as a context manager). Embedded
        mode locks its directory: one process at a time.

    Example:
        >>> store = open_store(Settings(data_dir="/tmp/q"))  # doctest: +SKIP
        >>> store.engine  # doctest: +SKIP
        'qdrant-edge'
    """
    if settings is not None:
        data_dir = data_dir if data_dir is not None else getattr(settings, "data_dir", None)
        url = url if url is not None else getattr(settings, "qdrant_url", None)
        api_key = api_key if api_key is not None else getattr(settings, "qdrant_api_key", None)
    if url:
        from finerank.retrieval.store.client import ClientStore

        return ClientStore.connect(url, api_key=api_key)
    from finerank.retrieval.store.edge import EdgeStore

    return EdgeStore(os.path.expanduser(data_dir) if data_dir else default_data_dir())
