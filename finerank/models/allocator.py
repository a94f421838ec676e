"""Keep a CPU forward's big buffers in the heap (glibc's malloc).

glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most
32 MiB as blocks are freed) with a fresh ``mmap`` and hands it back to the kernel on ``free``.
A CPU forward of the 0.6B reranker over a 200-pair pack (14,208 rows) allocates about 2.5 GB
per layer in blocks of 58-414 MB (GEMM outputs, norms, the attention gather), so every layer
faults the same memory in again, page by page, zeroed by the kernel: 2.4 million page faults
and 6.6 of the request's 30 CPU seconds spent in the kernel (4 layers, fp32, measured on a
2-core EPYC; docs/engine.md). Raising the thresholds keeps freed blocks in the heap for the
next layer: page faults drop to ~0 and the request takes 22% less CPU time, with the same
scores bit for bit (it changes where memory comes from, not what is computed).

:func:`keep_buffers_in_heap` does that with ``mallopt`` at run time, once per process, when a
model loads on CPU:

* mmap threshold 1 GiB: blocks up to 1 GiB come from the heap;
* trim threshold 2 GiB: freed memory at the top of the heap is kept, not returned at once;
* one arena: blocks allocated by the engine's worker threads come from the main heap too
  (glibc gives other threads arenas of at most 64 MiB, which would map big blocks again).

The cost is memory while busy: the process holds the peak of its largest forward (resident
size about 25% above the unmodified peak, fragmentation included) instead of returning it
between layers. Once idle it gives the memory back, as jemalloc does after its decay time:
the engine's schedulers call :func:`release_when_idle` when they have had no work for
:data:`IDLE_RELEASE_S` seconds and no model run is going (``malloc_trim``: 0.1 s; the next
request faults its pages in once, about 1 s of CPU on a 200-pair fp32 pack).
``FINERANK_MALLOC=0`` keeps glibc's defaults; so does a preloaded allocator (``LD_PRELOAD``
naming jemalloc, tcmalloc or mimalloc) or malloc settings of your own (any ``MALLOC_*``
variable, e.g. ``MALLOC_ARENA_MAX``, or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``).
Non-glibc systems are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: ``FINERANK_MALLOC``: ``auto`` (tune glibc when a model loads on CPU) or ``0`` (leave it)
MALLOC_ENV = "FINERANK_MALLOC"
#: blocks up to this size come from the heap instead of a fresh mmap
MMAP_THRESHOLD = 1 << 30
#: free memory at the top of the heap kept before trimming (mallopt takes an int)
TRIM_THRESHOLD = (1 << 31) - 1

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: seconds without a model run after which the schedulers give free heap memory back
IDLE_RELEASE_S = 10.0

_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_lock = threading.Lock()
_status: str | None = None
_libc = None  # set once the thresholds are raised: malloc_trim is due when idle
_runs = 0  # model runs going now, all schedulers together
_last_run_end = 0.0
_released = True  # nothing ran since the last release


def _user_choice(environ) -> str | None:
    """Why the user's own setup wins over the tuning (None: nothing set)."""
    if environ.get(MALLOC_ENV, "auto").strip().lower() in ("0", "false", "no", "off"):
        return f"{MALLOC_ENV}=0"
    preload = environ.get("LD_PRELOAD", "")
    for name in _PRELOADED_ALLOCATORS:
        if name in preload:
            return f"{name} preloaded"
    own = sorted(k for k in environ if k.startswith("MALLOC_"))  # glibc's or jemalloc's
    if own:
        return f"{own[0]} set"
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc"
    return None


def keep_buffers_in_heap(environ=None) -> str:
    """Raise glibc's mmap and trim thresholds and use one arena (see the module docs), once
    per process; later calls return the first call's outcome.

    Args:
        environ: the environment to read settings from (default ``os.environ``).

    Returns:
        One line for logs saying what was done or why not.

    Example:
        >>> line = keep_buffers_in_heap()
        >>> line.startswith(("malloc: ", "malloc left as is"))
        True
    """
    global _status
    with _lock:
        if _status is None:
            _status = _tune(os.environ if environ is None else environ)
            logger.info("%s", _status)
        return _status


def _tune(environ) -> str:
    reason = _user_choice(environ)
    if reason is not None:
        return f"malloc left as is ({reason})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "malloc left as is (not glibc)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "malloc left as is (no mallopt in libc.so.6)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        and mallopt(_M_ARENA_MAX, 1)
    )
    if not done:
        return "malloc left as is (mallopt refused the settings)"
    global _libc
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    _libc = libc
    return (
        "malloc: buffers up to 1 GiB kept in the heap between layers and requests "
        f"(glibc mmap/trim thresholds raised, one arena; {MALLOC_ENV}=0 to keep the defaults)"
    )


@contextmanager
def model_run() -> Iterator[None]:
    """Mark a model run (a scheduler's forward), so no release happens during it."""
    global _runs, _released, _last_run_end
    with _lock:
        _runs += 1
        _released = False
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            _last_run_end = time.monotonic()


def release_when_idle(idle_s: float = IDLE_RELEASE_S) -> bool:
    """Give the heap's free memory back to the system (``malloc_trim``) when the thresholds
    were raised, no model run is going, none ended in the last ``idle_s`` seconds and none
    ran since the last release.

    Args:
        idle_s: how long the last model run must have ended ago.

    Returns:
        Whether memory was released.

    Example:
        >>> with model_run():
        ...     release_when_idle(0.0)  # a run is going: never during one
        False
    """
    global _released
    with _lock:
        due = _libc is not None and not _runs and not _released
        if not due or time.monotonic() - _last_run_end < idle_s:
            return False
        _released = True
    started = time.perf_counter()
    trim()
    logger.debug("idle: free heap memory released in %.3f s", time.perf_counter() - started)
    return True


def trim() -> None:
    """Give the heap's free memory back now (``malloc_trim``), when the thresholds were raised
    (a no-op otherwise: glibc then trims by itself). Memory measurements call it first, so the
    level they start from is what is in use, not what the heap keeps.

    Example:
        >>> trim()
    """
    if _libc is not None:
        _libc.malloc_trim(0)
