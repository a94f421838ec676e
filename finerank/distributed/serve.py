"""``finerank serve --ray``: the same FastAPI app on Ray Serve replicas behind one endpoint.

Each replica builds its components once through :class:`~finerank.runtime.Runtime` (in its
constructor, so Serve only routes to it when it can answer) and serves
:func:`finerank.server.app.create_app` on that runtime through Serve's FastAPI ingress;
inside a replica the finerank engine batches concurrent requests exactly as in one process.
Ray Serve's HTTP proxy spreads requests over the replicas.

Example:
    >>> from finerank.settings import Settings
    >>> app = build_application(Settings(model="/models/Qwen3-Reranker-0.6B"),
    ...                         replicas=4, gpus_per_replica=1)  # doctest: +SKIP
    >>> start(app, Settings(port=8000))  # doctest: +SKIP
"""

from __future__ import annotations

import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any

from ray import serve

from finerank.distributed.cluster import absolute_paths
from finerank.errors import InvalidInputError
from finerank.runtime import store_configured
from finerank.settings import Settings

APP_NAME = "finerank"
# Requests one replica takes at once: enough for the engine to merge them into shared
# forward passes (Serve's own default of 5 would starve the batcher).
MAX_ONGOING_REQUESTS = 64


@dataclass(frozen=True)
class Scaling:
    """How many replicas: fixed (``replicas``) or autoscaled between ``min`` and ``max``."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    target_ongoing_requests: float = 16.0

    @classmethod
    def parse(cls, replicas: int | None, autoscale: str | None) -> Scaling:
        """From the CLI flags ``--replicas N`` / ``--autoscale MIN:MAX`` (not both).

        Example:
            >>> Scaling.parse(None, "1:4").autoscale
            (1, 4)
        """
        if replicas is not None and autoscale is not None:
            raise InvalidInputError("pass --replicas N or --autoscale MIN:MAX, not both")
        if autoscale is not None:
            low, sep, high = autoscale.partition(":")
            if not sep or not low.strip().isdigit() or not high.strip().isdigit():
                raise InvalidInputError(f"--autoscale wants MIN:MAX (e.g. 1:4), got {autoscale!r}")
            bounds = (int(low), int(high))
            if bounds[1] < 1 or bounds[0] > bounds[1]:
                raise InvalidInputError(
                    f"--autoscale {autoscale}: need 0 <= MIN <= MAX and MAX >= 1"
                )
            return cls(autoscale=bounds)
        if replicas is not None and replicas < 1:
            raise InvalidInputError(f"--replicas must be >= 1, got {replicas}")
        return cls(replicas=replicas or 1)

    def deployment_options(self) -> dict[str, Any]:
        if self.autoscale is None:
            return {"num_replicas": self.replicas}
        low, high = self.autoscale
        return {
            "autoscaling_config": {
                "min_replicas": low,
                "initial_replicas": max(low, 1),
                "max_replicas": high,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        }


@serve.ingress()
class FinerankReplica:
    """One Serve replica: its runtime (model, batching services, store) and the FastAPI app."""

    def __init__(self, settings: Settings):
        from finerank.runtime import Runtime

        self.settings = settings
        # Loading here (not in the app's background lifespan task) makes the replica count
        # as started only once it can score: Serve never routes to a replica still loading.
        self.runtime = Runtime(settings)
        self.runtime.start()

    def __serve_build_asgi_app__(self):
        from finerank.server.app import create_app

        return create_app(runtime=self.runtime)

    def check_health(self) -> None:
        """Serve calls this periodically; a replica whose runtime stopped is replaced."""
        if not self.runtime.ready:
            raise RuntimeError(f"finerank replica not ready: {self.runtime.not_ready_message()}")


def build_application(
    settings: Settings,
    *,
    scaling: Scaling | None = None,
    replicas: int | None = None,
    gpus_per_replica: float = 0.0,
    cpus_per_replica: float = 1.0,
    max_ongoing_requests: int = MAX_ONGOING_REQUESTS,
):
    """The Serve application (not running yet): the finerank app on N model replicas.

    Example:
        >>> app = build_application(Settings(model="/models/r"), replicas=2)  # doctest: +SKIP
    """
    if not settings.model:
        raise InvalidInputError("no model: pass --model PATH (or set FINERANK_MODEL)")
    if gpus_per_replica < 0 or cpus_per_replica < 0:
        raise InvalidInputError("--gpus-per-replica and CPUs per replica must be >= 0")
    scaling = scaling or Scaling(replicas=replicas or 1)
    if store_configured(settings) and not settings.qdrant_url and _max_replicas(scaling) > 1:
        raise InvalidInputError(
            "the embedded Qdrant store cannot be shared by several replicas: pass --qdrant-url "
            "(a Qdrant server) or serve one replica"
        )
    if gpus_per_replica > 0 and settings.device == "auto":
        settings = settings.model_copy(update={"device": "cuda"})
    # Keep the name clients send ("tiny" for --model ./tiny) while the path becomes absolute.
    settings = absolute_paths(
        settings.model_copy(update={"served_model_name": settings.public_model_name})
    )
    deployment = serve.deployment(
        FinerankReplica,
        name="finerank",
        max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        health_check_period_s=10.0,
        **scaling.deployment_options(),
    )
    return deployment.bind(settings)


def _max_replicas(scaling: Scaling) -> int:
    return scaling.autoscale[1] if scaling.autoscale else scaling.replicas


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start(application, settings: Settings) -> str:
    """Start Serve's HTTP proxy on ``settings.host:port`` and deploy; return the base URL.

    Returns once every replica has loaded its model (``serve.run`` waits for them).
    """
    port = settings.port or free_port(settings.host)
    serve.start(http_options={"host": settings.host, "port": port})
    serve.run(application, name=APP_NAME, route_prefix="/")
    return f"http://{settings.host}:{port}"


def run_ray_server(
    settings: Settings,
    *,
    scaling: Scaling,
    gpus_per_replica: float = 0.0,
    ray_address: str | None = None,
) -> int:
    """``finerank serve --ray``: deploy, print the endpoint, block until Ctrl-C, tear down."""
    import typer

    from finerank.distributed.cluster import ensure_ray

    application = build_application(settings, scaling=scaling, gpus_per_replica=gpus_per_replica)
    ensure_ray(ray_address)
    url = start(application, settings)
    what = (
        f"{scaling.autoscale[0]}-{scaling.autoscale[1]} replicas (autoscaling)"
        if scaling.autoscale
        else f"{scaling.replicas} replica(s)"
    )
    typer.echo(f"finerank ready on Ray Serve: {url} ({what}; docs: {url}/docs)", err=True)
    stop = threading.Event()
    # SIGTERM (docker stop, systemd, kill) and Ctrl-C both tear the deployment down.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        typer.echo("shutting down the Ray Serve deployment", err=True)
        serve.delete(APP_NAME)
        serve.shutdown()
    return 0
