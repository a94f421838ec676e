"""Prometheus metrics and the ASGI middleware that records them (and enforces the body limits:
its size, and the time it may take to arrive).

Each app gets its own ``CollectorRegistry`` so several apps can live in one process (tests).

Example:
    >>> metrics = ServerMetrics()
    >>> metrics.requests.labels(route="/v1/rerank", status="200").inc()
    >>> b"finerank_requests_total" in metrics.render()
    True
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finerank.batching import RequestTimings
from finerank.engine.scheduler import BatchStats

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Per-request phases span microseconds (tokenizing a short query) to minutes (a 32K-token
# request on a CPU): like TEI's duration buckets, a geometric series of ratio 1.5, here from
# 15 us to 111 s (40 buckets, 3 significant digits).
PHASE_BUCKETS = tuple(float(f"{1e-5 * 1.5**k:.3g}") for k in range(1, 41))
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


class ServerMetrics:
    """The server's metrics on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "finerank_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "finerank_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("finerank_in_flight_requests", "Requests being handled", registry=r)
        self.tokens = Counter("finerank_tokens_scored", "Tokens run through the model", registry=r)
        self.pairs = Counter("finerank_pairs_scored", "Pairs run through the model", registry=r)
        self.batch_pairs = Histogram(
            "finerank_batch_pairs", "Pairs per forward batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "finerank_batch_requests",
            "Requests merged per forward batch",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "finerank_batch_tokens", "Tokens per forward batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "finerank_batch_duration_seconds",
            "Model time per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.preparing = Gauge(
            "finerank_preparing_requests",
            "Big requests being tokenized (in steps, small ones go first)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "finerank_queue_depth_pairs", "Pairs waiting for the model", registry=r
        )
        self.dropped_pairs = Gauge(
            "finerank_dropped_pairs",
            "Queued pairs dropped because their client went away",
            registry=r,
        )
        self.disconnects = Counter(
            "finerank_client_disconnects",
            "Requests whose client left before the answer",
            registry=r,
        )
        self.ready = Gauge("finerank_model_ready", "1 once the model is loaded", registry=r)
        # the embedding model's batching path (same scheduler as the reranker's)
        self.embedding_inputs = Counter(
            "finerank_embedding_inputs", "Texts run through the embedding model", registry=r
        )
        self.embedding_tokens = Counter(
            "finerank_embedding_tokens", "Tokens run through the embedding model", registry=r
        )
        self.embedding_batch_requests = Histogram(
            "finerank_embedding_batch_requests",
            "Requests merged per embedding forward call",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.embedding_batch_seconds = Histogram(
            "finerank_embedding_batch_duration_seconds",
            "Embedding model time per forward call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.embedding_queue_depth = Gauge(
            "finerank_embedding_queue_depth", "Texts waiting for the embedding model", registry=r
        )
        # TEI's per-request phases (te_request_*_duration), per service: rerank | embed
        self.request_phases = {
            phase: Histogram(
                f"finerank_request_{phase}_seconds",
                help_text,
                ["service"],
                buckets=PHASE_BUCKETS,
                registry=r,
            )
            for phase, help_text in (
                ("tokenize", "Tokenizer time per request (summed over its steps)"),
                ("queue", "Per request: from its submit to the start of its first batch"),
                ("forward", "Per request: from its first batch's start to its last's end"),
                ("total", "Per request: from the service call to its answer"),
            )
        }

    def observe_batch(self, stats: BatchStats) -> None:
        """Batch listener for :class:`~finerank.engine.scheduler.BatchScheduler`."""
        self.tokens.inc(stats.tokens)
        self.pairs.inc(stats.pairs)
        self.batch_pairs.observe(stats.pairs)
        self.batch_requests.observe(stats.jobs)
        self.batch_tokens.observe(stats.tokens)
        self.batch_seconds.observe(stats.seconds)

    def observe_embedding_batch(self, stats: BatchStats) -> None:
        """Batch listener of the embedding service's scheduler."""
        self.embedding_inputs.inc(stats.pairs)
        self.embedding_tokens.inc(stats.tokens)
        self.embedding_batch_requests.observe(stats.jobs)
        self.embedding_batch_seconds.observe(stats.seconds)

    def request_listener(self, service: str) -> Callable[[RequestTimings], None]:
        """A request listener (``BatchedService.add_request_listener``) observing the phase
        histograms with ``service`` as label (``rerank`` or ``embed``)."""
        tokenize, queue, forward, total = (
            self.request_phases[phase].labels(service=service)
            for phase in ("tokenize", "queue", "forward", "total")
        )

        def observe(timings: RequestTimings) -> None:
            tokenize.observe(timings.tokenize_s)
            queue.observe(timings.queue_s)
            forward.observe(timings.forward_s)
            total.observe(timings.total_s)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int, value: int):
        super().__init__(
            413,
            f"request body too large: {value} bytes > max_body_bytes={limit}",
        )
        self.extra = {"limit": "max_body_bytes", "limit_value": limit, "value": value}


class _BodyTimedOut(HTTPException):
    def __init__(self, timeout_s: float, received: int):
        super().__init__(
            408,
            f"request body not received within body_timeout_s={timeout_s:g} s "
            f"({received} bytes arrived); send the whole body at once",
        )
        self.extra = {"limit": "body_timeout_s", "limit_value": timeout_s, "value": received}
        # The rest of the body is never read: the connection cannot be reused.
        self.headers = {"Connection": "close"}


class ObservedApp:
    """ASGI middleware: request count/latency/in-flight metrics and the body limits.

    A body must arrive within ``body_timeout_s`` of the request's start (whatever the pace of
    its pieces), else the request is answered ``408`` and the connection closed: a client that
    never finishes sending cannot hold a request (and its memory) open forever.

    The route label is the matched route's path template (bounded cardinality); requests that
    match no route are labelled ``unmatched``.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServerMetrics,
        max_body_bytes: int,
        error_response: Callable[..., object],
        body_timeout_s: float = 60.0,
    ):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                # Answer before reading: a huge body is never buffered.
                exc = _BodyTooLarge(self.max_body_bytes, declared)
                response = self.error_response(413, exc.detail, **exc.extra)
                await response(scope, receive, send_observed)  # type: ignore[operator]
                return
            await self.app(scope, self._limited(receive, started), send_observed)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(route=label, status=str(status)).inc()
            self.metrics.latency.labels(route=label).observe(time.perf_counter() - started)

    def _limited(self, receive: Receive, started: float) -> Receive:
        limit = self.max_body_bytes
        timeout_s = self.body_timeout_s
        deadline = started + timeout_s
        seen = 0
        complete = False

        async def receive_limited() -> Message:
            nonlocal seen, complete
            if complete:  # past the body: only the disconnect is left to wait for
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - time.perf_counter())
            except TimeoutError:
                raise _BodyTimedOut(timeout_s, seen) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit, seen)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        return receive_limited


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
