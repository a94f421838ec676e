"""The page's file uploads: only bytes a client uploaded through this page, nothing else.

Gradio moves every ``FileData`` path named in a request into its cache before any component
code runs, and it skips its "was this uploaded?" check for apps mounted into FastAPI instead of
launched (``processing_utils._check_allowed`` returns early while ``blocks.has_launched`` is
false). A request naming ``/etc/passwd`` would have it copied into the cache and served by
``gradio_api/file=``. So the page does not rely on that check:

* each page gets a private upload directory (``mkdtemp``: mode 0700) in place of Gradio's
  shared ``$TMPDIR/gradio``;
* :class:`UploadGuard` accepts a path only if this app's ``/upload`` route wrote it (Gradio
  records those in ``blocks.upload_file_set``), it lies in that directory, is a regular file
  (no symlink) and within the size limit; every other path (absolute, ``../``, a URL, a file in
  the shared cache) is refused before a byte is read or copied;
* the upload component (:func:`upload_component`) checks every path twice, where Gradio would
  copy it and where it would read it, reads the bytes once and deletes the file;
* uploads never read are evicted (oldest first) beyond a count limit, and so are the temp
  files aborted uploads leave, so the directory holds at most about
  ``2 * max_pending * max_bytes`` plus the uploads in flight.

Example:
    >>> guard = UploadGuard(max_bytes=1024, max_pending=4)
    >>> guard.check("/etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finerank.errors.InvalidInputError: upload the file through the page ...
    >>> guard.close()
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finerank.errors import InvalidInputError, LimitExceededError

logger = logging.getLogger("finerank.ui")

# A temp file the multipart parser is still writing is younger than this; older strays are
# left-overs of aborted uploads and are removed with the eviction.
_STRAY_AGE_S = 600.0
REFUSED = "upload the file through the page (the request named a file the page did not receive)"


@dataclass(frozen=True)
class UploadedFile:
    """The bytes of one upload and the name the client gave it."""

    name: str
    data: bytes


class UploadGuard:
    """Owns the page's private upload directory and decides which paths may be read.

    Args:
        max_bytes: the largest upload accepted, in bytes.
        max_pending: how many received but not yet read uploads are kept (oldest evicted).
    """

    def __init__(self, *, max_bytes: int, max_pending: int):
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.directory = Path(tempfile.mkdtemp(prefix="finerank-ui-uploads-")).resolve()
        self._received: set[str] | None = None
        # Arrival order of received uploads (file times are too coarse to order them by).
        self._arrival: dict[str, int] = {}
        self._arrivals = 0
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(
            self, shutil.rmtree, str(self.directory), ignore_errors=True
        )

    def attach(self, received: set[str]) -> None:
        """Use ``received`` (Gradio's ``blocks.upload_file_set``) as the record of uploads."""
        self._received = received

    # ---- checks --------------------------------------------------------------------------
    def received(self, path: object) -> bool:
        """Whether this page's upload route wrote ``path`` (and has not discarded it)."""
        received = self._received
        return isinstance(path, str) and received is not None and path in received

    def check(self, path: object) -> Path:
        """The path, if this page's upload route wrote it and it is still a regular file.

        Raises:
            InvalidInputError: anything else (the message never names the path).
            LimitExceededError: the file is over ``max_bytes``.
        """
        if not isinstance(path, str) or not path or "\x00" in path:
            raise InvalidInputError(REFUSED)
        if not self.received(path):
            raise InvalidInputError(REFUSED)
        candidate = Path(path)
        if not candidate.is_absolute() or candidate.parent.parent != self.directory:
            raise InvalidInputError(REFUSED)
        # No link anywhere: the real path is the path, and the file itself is not a symlink.
        if os.path.realpath(path) != path:
            raise InvalidInputError(REFUSED)
        try:
            info = os.lstat(path)
        except OSError:
            raise InvalidInputError(
                "the upload is gone (uploads are read once): upload the file again"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(REFUSED)
        if info.st_size > self.max_bytes:
            raise _too_big(self.max_bytes, info.st_size)
        return candidate

    def take(self, path: object, name: str | None = None) -> UploadedFile:
        """Check ``path``, read its bytes once (at most ``max_bytes``) and delete the file."""
        checked = self.check(path)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(checked, flags)
        except OSError:
            raise InvalidInputError(REFUSED) from None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise _too_big(self.max_bytes, len(data))
        self.discard(str(checked))
        return UploadedFile(name=name or checked.name, data=data)

    # ---- housekeeping --------------------------------------------------------------------
    def discard(self, path: str) -> None:
        """Forget and delete one received upload."""
        with self._lock:
            if self._received is not None:
                self._received.discard(path)
            self._arrival.pop(path, None)
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))  # Gradio's per-upload (content hash) folder

    def evict(self) -> None:
        """Keep the newest ``max_pending`` received uploads, and as many stray temp files
        (aborted uploads leave them) at most; strays older than ten minutes always go."""
        received = self._received if self._received is not None else set()
        with self._lock:
            for path in sorted(received - self._arrival.keys()):
                self._arrivals += 1
                self._arrival[path] = self._arrivals
        pending: list[tuple[float, str]] = []
        strays: list[tuple[float, str]] = []
        now = time.time()
        for root, _dirs, files in os.walk(self.directory):
            for name in files:
                path = os.path.join(root, name)
                try:
                    modified = os.lstat(path).st_mtime
                except OSError:
                    continue
                if path in received:
                    pending.append((self._arrival.get(path, 0), path))
                elif now - modified > _STRAY_AGE_S:
                    self.discard(path)
                else:
                    strays.append((modified, path))
        for group in (pending, strays):
            group.sort()
            for _, path in group[: max(0, len(group) - self.max_pending)]:
                self.discard(path)
        for stale in list(received):
            if not os.path.exists(stale):
                self.discard(stale)

    def close(self) -> None:
        """Delete the directory and everything in it."""
        self._finalizer()


def _too_big(limit: int, size: int) -> LimitExceededError:
    return LimitExceededError(
        f"upload too large: {size} bytes > ui_max_upload_bytes={limit}",
        limit_name="ui_max_upload_bytes",
        limit=limit,
        value=size,
    )


def confine_blocks(blocks: Any, guard: UploadGuard) -> None:
    """Make every component of ``blocks`` but the page's upload refuse to take in a file.

    Gradio hands any file reference found in any input value to that input's component, which
    copies the file into its cache; no component of the page but the upload takes files, so
    the others refuse (the page's gate already refuses such requests; this is the second lock).
    """
    import gradio as gr

    def refuse(_url_or_file_path: object = None) -> str:
        raise gr.Error(REFUSED)

    async def async_refuse(_url_or_file_path: object = None) -> str:
        raise gr.Error(REFUSED)

    for block in blocks.blocks.values():
        block.GRADIO_CACHE = str(guard.directory)
        if not getattr(block, "takes_page_uploads", False):
            block.move_resource_to_block_cache = refuse
            block.async_move_resource_to_block_cache = async_refuse
    guard.attach(blocks.upload_file_set)


def upload_component(guard: UploadGuard, **kwargs: Any):
    """A ``gr.File`` whose value reaches the handler as :class:`UploadedFile` (or ``None``).

    Gradio copies each named file into its cache through the component's
    ``async_move_resource_to_block_cache``; here that only lets through what ``guard`` accepts
    and copies nothing. ``preprocess`` checks again (Gradio skips the copy for its "static"
    files) and hands over the bytes. (The methods are set on the instance: defining a
    ``gr.File`` subclass makes Gradio write a ``.pyi`` stub next to this module.)
    """
    import gradio as gr
    from gradio.data_classes import ListFiles

    def checked(url_or_file_path: object = None) -> str | None:
        if url_or_file_path is None:
            return None
        try:
            return str(guard.check(str(url_or_file_path)))
        except (InvalidInputError, LimitExceededError) as exc:
            raise gr.Error(str(exc)) from None

    async def async_checked(url_or_file_path: object = None) -> str | None:
        return checked(url_or_file_path)

    def preprocess(payload: Any) -> UploadedFile | None:
        if payload is None:
            return None
        files = list(payload) if isinstance(payload, ListFiles) else [payload]
        if len(files) != 1:
            raise gr.Error("upload one file")
        try:
            return guard.take(files[0].path, name=files[0].orig_name)
        except (InvalidInputError, LimitExceededError) as exc:
            raise gr.Error(str(exc)) from None

    component = gr.File(type="filepath", file_count="single", **kwargs)
    component.move_resource_to_block_cache = checked
    component.async_move_resource_to_block_cache = async_checked
    component.preprocess = preprocess
    component.takes_page_uploads = True
    return component
