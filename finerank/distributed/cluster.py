"""Connect to a Ray cluster, or start a local one, with a clear error when Ray is missing."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import ModuleType

from finerank.errors import FinerankError
from finerank.settings import Settings


def import_ray() -> ModuleType:
    """Import Ray or say how to install it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FinerankError(
            'Ray is not installed: pip install "finerank[ray]" (ray[serve,data], pyarrow)'
        ) from exc
    return ray


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Make sure this process is connected to Ray.

    Reuses an existing connection (so tests and notebooks can call ``ray.init`` themselves).
    ``address`` is a running cluster (``auto``, ``ray://host:10001``, ``host:6379``);
    without it, ``RAY_ADDRESS`` or a cluster started by ``ray start`` on this machine is
    joined, else a local one-machine cluster is started.

    Example:
        >>> ensure_ray(num_cpus=2)  # doctest: +SKIP
    """
    ray = import_ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, object] = {"include_dashboard": False}
    if address:
        kwargs["address"] = address
    elif not os.environ.get("RAY_ADDRESS") and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)  # type: ignore[arg-type]
    except ConnectionError as exc:
        raise FinerankError(
            f"could not connect to the Ray cluster at {address!r} ({exc}); start it with "
            "`ray start --head` on the head node and pass its address (host:6379)"
        ) from exc
    from finerank.distributed.reaper import start_reaper

    # The processes of a local cluster die with this one, even on kill -9 (a cluster this
    # process only joined has none of them as its children: nothing to reap).
    start_reaper()
    if threading.current_thread() is threading.main_thread():
        # Ray's own SIGTERM handler prints a C++ stack trace and aborts (exit 134); as an
        # interrupt, the job stops like on Ctrl-C and Ray shuts down at exit.
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def absolute_paths(settings: Settings) -> Settings:
    """Settings whose local model directories are absolute: Ray workers do not share the
    driver's working directory, so ``--model ./model`` must name the same place there.

    Example:
        >>> absolute_paths(Settings(model="Qwen/Qwen3-Reranker-0.6B")).model  # hub ids stay
        'Qwen/Qwen3-Reranker-0.6B'
    """
    update = {}
    for name in ("model", "embedding_model"):
        value = getattr(settings, name)
        if value and not value.startswith(("http://", "https://")) and Path(value).exists():
            update[name] = str(Path(value).resolve())
    return settings.model_copy(update=update) if update else settings
