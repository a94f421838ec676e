"""Ray's helper processes die with the command that started them, however it dies.

A local Ray cluster started by ``finerank batch rerank`` (or ``batch index``, ``serve --ray``)
is a dozen processes: the GCS, the raylet, workers, and agents the raylet starts. Ray shuts
them down at a normal exit and on SIGTERM, and its fate sharing takes the GCS, the raylet and
the workers down when the driver is killed (``kill -9``, the OOM killer); but the dashboard
and runtime-env agents then hang on a dead GCS and live on (measured with Ray 2.60: both still
running minutes after ``kill -9``).

:func:`start_reaper` starts a small watcher process (its own session, so Ctrl-C in a terminal
does not reach it) that keeps a list of the driver's descendants, refreshed every second, and
waits for the driver to die: the read end of a pipe only the driver holds gets EOF whatever
the cause. It then terminates every process on its list that still runs (same pid and start
time: never a recycled pid), and kills those that ignore SIGTERM. Linux only (it reads
``/proc``).

Example:
    >>> start_reaper()  # after ray.init() started a local cluster  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

POLL_S = 1.0
GRACE_S = 5.0

_reaper: subprocess.Popen | None = None


def start_reaper() -> None:
    """Start the watcher of this process's descendants (once per process; Linux, where
    ``/proc`` lists processes; elsewhere nothing is started)."""
    global _reaper
    if not os.path.isdir("/proc/self") or (_reaper is not None and _reaper.poll() is None):
        return
    # Run as a file, not ``-m``: importing the finerank package would load torch for nothing.
    _reaper = subprocess.Popen(
        [sys.executable, __file__, str(os.getpid())],
        stdin=subprocess.PIPE,  # never written; EOF when this process is gone
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid`` from ``/proc``; None once it is gone
    (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after "pid (comm)": state, ppid, ... starttime is field 22 of stat(5), 20th after comm
    if fields[0] == b"Z":
        return None
    return int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every process below ``root``."""
    parents: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(name))
                started[int(name)] = stat[1]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found[child] = started[child]
                todo.append(child)
    return found


def _watch(driver_pid: int) -> None:
    import signal
    import time

    me = os.getpid()
    known: dict[int, int] = {}
    lock = threading.Lock()
    done = threading.Event()

    def refresh() -> None:
        while not done.is_set():
            found = _descendants(driver_pid)
            found.pop(me, None)
            with lock:
                known.update(found)
            done.wait(POLL_S)

    threading.Thread(target=refresh, daemon=True).start()
    sys.stdin.buffer.read()  # returns at EOF: the driver is gone (or closed the pipe)
    done.set()
    with lock:
        targets = dict(known)

    def same(pid: int, started: int) -> bool:  # still that process, not a recycled pid
        stat = _stat(pid)
        return stat is not None and stat[1] == started

    for pid, started in targets.items():
        if same(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(same(p, s) for p, s in targets.items()):
        time.sleep(0.1)
    for pid, started in targets.items():
        if same(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":  # pragma: no cover - runs as its own process
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(int(sys.argv[1]))
