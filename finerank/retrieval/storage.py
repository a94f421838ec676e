"""Disk space for the store: ingest stops cleanly before the disk is full.

The embedded store (Qdrant Edge) writes through memory-mapped files, and a write to a mapped
page that the file system cannot back kills the process (``SIGBUS``) instead of raising; so
ingest checks, before each batch, that the store's disk keeps ``min_free_disk_mb`` free, and
stops with :class:`~finerank.errors.InsufficientStorageError` (HTTP ``507``, exit 2 in the
CLI) otherwise. A store that does report a full disk (a Qdrant server, SQLite) gives the same
error. Batches are whole upserts and stale chunks go last, so a re-run after freeing space
writes what is missing and converges to the collection of an uninterrupted run.

Example:
    >>> from finerank.retrieval.store import VectorStore
    >>> store = VectorStore.open(data_dir=tempfile.mkdtemp())  # doctest: +SKIP
    >>> check_free_space(store, 10**18)  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    finerank.errors.InsufficientStorageError: no space left on device for the store in ...
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from finerank.errors import FinerankError, InsufficientStorageError, is_disk_full

MIB = 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 64 * MIB
_RERUN = (
    "free some space (or use another --data-dir) and run the same ingest again: it writes "
    "what is missing"
)


def store_directory(store: object) -> Path | None:
    """The local directory an embedded store writes to (``None`` for a Qdrant server)."""
    root = getattr(store, "root", None)
    return Path(root) if root is not None else None


def check_free_space(store: object, min_free_bytes: int) -> None:
    """Raise :class:`InsufficientStorageError` if the store's disk has less than
    ``min_free_bytes`` free (no check for stores without a local directory, or 0)."""
    root = store_directory(store)
    if root is None or min_free_bytes <= 0:
        return
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < min_free_bytes:
        raise InsufficientStorageError(
            f"no space left on device for the store in {root}: {free / MIB:.1f} MiB free, "
            f"ingest keeps at least {min_free_bytes / MIB:.0f} MiB (min_free_disk_mb); {_RERUN}"
        )


@contextlib.contextmanager
def storage_errors(store: object) -> Iterator[None]:
    """Turn a store's "disk full" failure into :class:`InsufficientStorageError`."""
    try:
        yield
    except FinerankError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        where = store_directory(store) or getattr(store, "location", "the store")
        raise InsufficientStorageError(
            f"no space left on device writing to {where}; {_RERUN}"
        ) from exc
