"""The one place that turns :class:`~finerank.settings.Settings` into loaded components.

Every entry point (the CLI commands, the HTTP app, the web page, Ray replicas and actors) asks
a :class:`Runtime` for its reranker, embedder and store, or for the services built on them:

- :class:`~finerank.service.RerankService`: the reranker behind a batching worker;
- :class:`~finerank.retrieval.embedding_service.EmbeddingService`: the embedder behind the
  same kind of batching worker (``/v1/embeddings``, query embeddings, ingest);
- :class:`~finerank.retrieval.service.RetrievalService`: the store, recall, and the reranked
  head through the two services above (the HTTP routes and the web page);
- :class:`~finerank.retrieval.search.SearchService`: the same search, synchronous (CLI, eval).

Dependencies point one way: entry points -> runtime -> services -> engine -> model backends.

Components load one at a time in a fixed order (reranker, embedder, store): transformers'
lazy imports are not thread-safe and two models loading at once would double the peak memory.
Each component has a typed :class:`ComponentStatus`; ``/health`` reports them.

Example:
    >>> runtime = Runtime(Settings())
    >>> runtime.configured
    []
    >>> runtime = Runtime(Settings(model="/models/Qwen3-Reranker-0.6B", data_dir="/tmp/q"))
    >>> [(c.name, c.state.value) for c in runtime.status()]
    [('reranker', 'pending'), ('store', 'pending')]
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from finerank.errors import (
    InvalidInputError,
    ModelLoadError,
    ServiceUnavailableError,
    UnknownModelError,
)
from finerank.settings import Settings

if TYPE_CHECKING:
    from finerank.models.fused import CompileMode
    from finerank.reranker import Reranker
    from finerank.retrieval.embedder import Embedder
    from finerank.retrieval.embedding_service import EmbeddingService
    from finerank.retrieval.search import SearchService
    from finerank.retrieval.service import RetrievalService
    from finerank.retrieval.store import VectorStore
    from finerank.service import RerankService

logger = logging.getLogger("finerank.runtime")

DEFAULT_RERANKER = "Qwen/Qwen3-Reranker-0.6B"
ComponentName = Literal["reranker", "embedder", "store"]
LOAD_ORDER: tuple[ComponentName, ...] = ("reranker", "embedder", "store")

# One model load at a time in the whole process (several runtimes may share it: tests, Ray).
_LOAD_LOCK = threading.Lock()


def default_model_unavailable(reason: str = "") -> str:
    """The one message of a first run without a reranker: what to do, in one paragraph.

    ``finerank serve`` with no ``--model`` serves :data:`DEFAULT_RERANKER`; when it is neither
    in the local Hugging Face cache nor downloadable, this is everything the user is told.

    Example:
        >>> "finerank make-test-model DIR" in default_model_unavailable()
        True
    """
    because = f" ({reason})" if reason else ""
    return (
        f"no --model given, and the default reranker {DEFAULT_RERANKER} is not in the local "
        f"Hugging Face cache and cannot be downloaded here{because}. Either run once where "
        f"the hub is reachable (finerank serve downloads it), or pass a local model: "
        f"`finerank make-test-model DIR` builds a small random-weight one to try finerank, "
        f"then `finerank serve --model DIR`."
    )


def fetch_default_reranker() -> None:
    """Make sure :data:`DEFAULT_RERANKER` is on disk: in the local Hugging Face cache, or
    downloaded once. Raises :class:`ModelLoadError` with :func:`default_model_unavailable`."""
    from finerank.models.loading import resolve_model_dir

    logger.info("no --model: serving %s (local cache, or downloaded once)", DEFAULT_RERANKER)
    try:
        resolve_model_dir(DEFAULT_RERANKER, what="reranker")
    except ModelLoadError as exc:
        logger.debug("default reranker unavailable: %s", exc)
        raise ModelLoadError(default_model_unavailable()) from None


def build_reranker(settings: Settings, *, compile: CompileMode = "auto") -> Reranker:
    """Load the reranker ``settings`` describe (model, device, dtype and the engine knobs).

    Args:
        settings: the configuration.
        compile: whether its CPU kernels compile (``compile=`` of
            :meth:`~finerank.reranker.Reranker.from_pretrained`).

    Returns:
        The loaded reranker.

    Example:
        >>> build_reranker(Settings(model="/models/Qwen3-Reranker-0.6B"))  # doctest: +SKIP
        <finerank.reranker.Reranker object at ...>
    """
    from finerank.reranker import Reranker

    if not settings.model:
        raise InvalidInputError("no reranker: pass --model PATH_OR_ID (or set FINERANK_MODEL)")
    with _LOAD_LOCK:
        try:
            return Reranker.from_pretrained(
                settings.model,
                device=settings.device,
                dtype=settings.dtype,
                max_length=settings.max_length,
                family=settings.family,
                max_batch_tokens=settings.max_batch_tokens,
                share_prefix=settings.share_prefix,
                chunk_overlap=settings.chunk_overlap,
                quantize=settings.quantize,
                compile=compile,
            )
        except ModelLoadError as exc:
            if settings.model == DEFAULT_RERANKER and "could not download" in str(exc):
                raise ModelLoadError(default_model_unavailable()) from exc
            raise


def build_embedder(
    settings: Settings, source: str | None = None, *, compile: CompileMode = "auto"
) -> Embedder:
    """Load the embedding model ``source`` (default: ``settings.embedding_model``).

    A remote ``http(s)://`` endpoint's key comes from ``FINERANK_EMBEDDING_API_KEY`` (never a
    flag: it would land in the shell history).

    Example:
        >>> build_embedder(Settings(embedding_model="/models/Qwen3-Embedding-0.6B"))
        ... # doctest: +SKIP
    """
    from finerank.retrieval.embedder import Embedder

    source = source or settings.embedding_model
    if not source:
        raise InvalidInputError(
            "no embedding model: pass --embedding-model PATH_OR_ID (or set "
            "FINERANK_EMBEDDING_MODEL)"
        )
    with _LOAD_LOCK:
        return Embedder.from_pretrained(
            source,
            device=settings.device,
            dtype=settings.dtype,
            max_batch_tokens=settings.max_batch_tokens,
            api_key=os.environ.get("FINERANK_EMBEDDING_API_KEY"),
            compile=compile,
        )


def open_store(settings: Settings) -> VectorStore:
    """Open the store ``settings`` name: a Qdrant server (``qdrant_url``, qdrant-client) or
    Qdrant Edge embedded in ``data_dir`` (default: the user data directory)."""
    from finerank.retrieval.store import open_store as open_configured_store

    return open_configured_store(settings)


def store_configured(settings: Settings) -> bool:
    """A store is part of the configuration when a data directory or Qdrant URL is given,
    or an embedding model (whose vectors need a store; the default data directory then)."""
    return bool(settings.data_dir or settings.qdrant_url or settings.embedding_model)


class ComponentState(enum.Enum):
    PENDING = "pending"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ComponentStatus:
    """Where one component stands: ``state``, what it is (``source``), why it failed."""

    name: ComponentName
    source: str
    state: ComponentState = ComponentState.PENDING
    error: str | None = None
    seconds: float | None = None

    def describe(self) -> str:
        if self.state is ComponentState.FAILED:
            return f"{self.name} failed to load: {self.error}"
        return f"{self.name} {self.state.value}"


class Runtime:
    """The components one configuration describes, each built once, and the services on them.

    Args:
        settings: the configuration (default: ``Settings()``, i.e. ``FINERANK_*``).
        reranker / embedder / store: already loaded components to use instead of loading
            them (tests, a process that loaded them itself); they count as configured.
        compile: whether the models it loads compile their CPU kernels (``compile=`` of
            :meth:`~finerank.reranker.Reranker.from_pretrained`): ``auto`` for servers and
            batch jobs, ``off`` for a one-shot command answering one request, where
            compiling costs more than it saves (``FINERANK_COMPILE=1`` still compiles).

    Use :meth:`start` (load everything configured, start the batching services; blocking) for
    servers, or the lazy accessors :meth:`reranker`, :meth:`embedder`, :meth:`store` for
    one-shot commands that need only some of them. :meth:`close` releases everything.

    Example:
        >>> runtime = Runtime(Settings(model="./tiny-qwen3"))  # doctest: +SKIP
        >>> runtime.start()  # doctest: +SKIP
        >>> outcome = await runtime.rerank.rerank("q", ["a", "b"])  # doctest: +SKIP
        >>> runtime.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        reranker: Reranker | None = None,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
        compile: CompileMode = "auto",
    ):
        self.settings = settings or Settings()
        self.compile = compile
        s = self.settings
        self._loaded: dict[ComponentName, object] = {}
        self._status: dict[ComponentName, ComponentStatus] = {}
        given = {"reranker": reranker, "embedder": embedder, "store": store}
        sources = {
            "reranker": s.model,
            "embedder": s.embedding_model,
            "store": s.qdrant_url or (str(s.data_dir) if s.data_dir else None),
        }
        configured = {
            "reranker": bool(s.model),
            "embedder": bool(s.embedding_model),
            "store": store_configured(s),
        }
        self._given: set[ComponentName] = set()
        for name in LOAD_ORDER:
            component = given[name]
            if component is None and not configured[name]:
                continue
            source = sources[name] or _describe(component) or "default"
            status = ComponentStatus(name, source)
            if component is not None:
                self._loaded[name] = component
                self._given.add(name)
                status.state, status.seconds = ComponentState.READY, 0.0
            self._status[name] = status
        self._lock = threading.RLock()
        self._serving = False
        self._started = False
        self._closed = False
        self.rerank: RerankService | None = None
        self.embeddings: EmbeddingService | None = None
        self.retrieval: RetrievalService | None = None
        self._build_services()

    # ---- what is configured -----------------------------------------------------------------
    @property
    def configured(self) -> list[ComponentName]:
        """Configured components in load order."""
        return list(self._status)

    def status(self) -> list[ComponentStatus]:
        """Every configured component's status, in load order."""
        return list(self._status.values())

    @property
    def ready(self) -> bool:
        """Every configured component is loaded and the services accept requests."""
        return self._started and all(c.state is ComponentState.READY for c in self._status.values())

    @property
    def preloaded(self) -> bool:
        """Every configured component is in memory already (given, or loaded on first use):
        :meth:`start` then only starts the services."""
        return all(c.state is ComponentState.READY for c in self._status.values())

    @property
    def failed(self) -> ComponentStatus | None:
        """The component whose load failed, if any."""
        return next((c for c in self._status.values() if c.state is ComponentState.FAILED), None)

    def not_ready_message(self) -> str:
        """Why the runtime is not ready, naming the component: for ``/health`` and 503s."""
        failed = self.failed
        if failed is not None:
            return failed.describe()
        if self._closed:
            return "the service is shutting down"
        waiting = [c for c in self._status.values() if c.state is not ComponentState.READY]
        if not waiting:
            return "starting the services"
        loading = [c.name for c in waiting if c.state is ComponentState.LOADING]
        pending = [c.name for c in waiting if c.state is ComponentState.PENDING]
        parts = []
        if loading:
            parts.append(f"loading {', '.join(loading)}")
        if pending:
            parts.append(f"then {', '.join(pending)}" if loading else f"{', '.join(pending)} next")
        return "; ".join(parts)

    # ---- components (each built once) -------------------------------------------------------
    def reranker(self) -> Reranker:
        """The reranker (loaded on first use)."""
        return self._component("reranker")  # type: ignore[return-value]

    def embedder(self) -> Embedder:
        """The embedding model (loaded on first use)."""
        return self._component("embedder")  # type: ignore[return-value]

    def store(self) -> VectorStore:
        """The store (opened on first use; embedded Qdrant locks its directory until
        :meth:`close`)."""
        return self._component("store")  # type: ignore[return-value]

    def has(self, name: ComponentName) -> bool:
        """Whether ``name`` is configured."""
        return name in self._status

    def use_embedder(self, source: str) -> Embedder:
        """The embedder; when none is configured, ``source`` becomes it (``finerank search``
        embeds queries with the model that built the collection)."""
        with self._lock:
            if "embedder" not in self._status:
                self._status["embedder"] = ComponentStatus("embedder", source)
        return self.embedder()

    def _component(self, name: ComponentName) -> object:
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            status = self._status.get(name)
            if status is None:
                raise InvalidInputError(_not_configured(name))
            if status.state is ComponentState.FAILED:
                raise ServiceUnavailableError(status.describe())
            status.state = ComponentState.LOADING
            started = time.perf_counter()
            try:
                component = self._build(status)
            except BaseException as exc:
                status.state, status.error = ComponentState.FAILED, str(exc)
                logger.info("%s failed to load: %s", name, exc)  # the caller reports it
                raise
            status.state, status.seconds = ComponentState.READY, time.perf_counter() - started
            self._loaded[name] = component
            logger.info("%s ready: %s (%.1f s)", name, status.source, status.seconds)
            return component

    def _build(self, status: ComponentStatus) -> object:
        s = self.settings
        if status.name == "reranker":
            logger.info("loading reranker %s", s.model)
            return build_reranker(s, compile=self.compile)
        if status.name == "embedder":
            logger.info("loading embedding model %s", status.source)
            return build_embedder(s, status.source, compile=self.compile)
        if self._serving and self.retrieval is not None:
            # a served store is used from the retrieval service's thread only: open it there
            return self.retrieval.open_store(lambda: open_store(s))
        return open_store(s)

    # ---- services ---------------------------------------------------------------------------
    def _build_services(self) -> None:
        from finerank.service import RerankService

        if self.has("reranker"):
            self.rerank = RerankService(self.settings, reranker=self._loaded.get("reranker"))
        if self.has("embedder"):
            from finerank.retrieval.embedding_service import EmbeddingService

            self.embeddings = EmbeddingService(self.settings)
        if self.has("store"):
            from finerank.retrieval.service import RetrievalService

            self.retrieval = RetrievalService(
                self.settings, rerank=self.rerank, embeddings=self.embeddings
            )

    def start(self) -> None:
        """Load every configured component in order, then start the services on them
        (blocking, idempotent).

        A component that fails to load is recorded in :meth:`status` and the others still
        load (the web page's Rerank tab works without a store); the first error is raised at
        the end. Servers treat it as fatal.
        """
        with self._lock:
            if self._started:
                return
            if self._closed:
                raise ServiceUnavailableError("this runtime was closed")
            self._serving = True
            errors: list[BaseException] = []
            for name in self.configured:
                try:
                    self._component(name)
                except Exception as exc:  # noqa: BLE001 - recorded; raised below
                    errors.append(exc)
            if self.rerank is not None and "reranker" in self._loaded:
                self.rerank.start(self.reranker())
            if self.embeddings is not None and "embedder" in self._loaded:
                self.embeddings.start(self.embedder())
            if self.retrieval is not None and "store" in self._loaded:
                self.retrieval.start(self.store())
            self._started = True
        if errors:
            raise errors[0]

    def search_service(self, *, rerank: bool = True) -> SearchService:
        """The synchronous two-stage search over this runtime's components (CLI, eval):
        the store, the embedder and (with ``rerank``) the reranker, when configured."""
        from finerank.retrieval.search import SearchService

        return SearchService.from_settings(
            self.settings,
            self.store(),
            embedder=self.embedder() if self.has("embedder") else None,
            reranker=self.reranker() if rerank and self.has("reranker") else None,
        )

    def require_rerank(self) -> RerankService:
        """The started rerank service; :class:`UnknownModelError` (404) when no reranker is
        configured, :class:`ServiceUnavailableError` (503) naming what is still loading."""
        if self.rerank is None:
            raise UnknownModelError(_not_configured("reranker"))
        if not self.rerank.ready:
            raise ServiceUnavailableError(self._waiting_for("reranker"))
        return self.rerank

    def require_embeddings(self) -> EmbeddingService:
        """The started embedding service; 404 when no embedding model is configured, 503
        while it loads."""
        if self.embeddings is None:
            raise UnknownModelError(_not_configured("embedder"))
        if not self.embeddings.ready:
            raise ServiceUnavailableError(self._waiting_for("embedder"))
        return self.embeddings

    def require_retrieval(self) -> RetrievalService:
        """The started retrieval service (store, and the embedder when configured), or a 503
        saying which component is not ready."""
        if self.retrieval is None:
            raise ServiceUnavailableError(_not_configured("store"))
        if not self.retrieval.ready:
            raise ServiceUnavailableError(self._waiting_for("store"))
        if self.embeddings is not None and not self.embeddings.ready:
            raise ServiceUnavailableError(self._waiting_for("embedder"))
        return self.retrieval

    def _waiting_for(self, name: ComponentName) -> str:
        status = self._status[name]
        if status.state is ComponentState.FAILED:
            return status.describe()
        if self._closed:
            return "the service is shutting down; retry on another instance"
        return f"the {name} is not ready yet ({self.not_ready_message()}); retry shortly"

    def stop(self, *, drain: bool = True) -> None:
        """Stop the services (``drain``: answer queued work first) and close the store.
        Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._started = False
        if self.rerank is not None:
            self.rerank.stop(drain=drain)
        if self.embeddings is not None:
            self.embeddings.stop(drain=drain)
        if self.retrieval is not None:
            self.retrieval.stop()  # closes the store it opened, on the store thread
        store = self._loaded.get("store")
        if store is not None and "store" not in self._given and not self._serving:
            store.close()  # type: ignore[attr-defined]

    close = stop

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _not_configured(name: ComponentName) -> str:
    return {
        "reranker": "no reranker is served here: start with --model PATH_OR_ID "
        "(or set FINERANK_MODEL)",
        "embedder": "no embedding model is served here: start with --embedding-model "
        "PATH_OR_ID (or set FINERANK_EMBEDDING_MODEL)",
        "store": "no store is configured: pass --data-dir DIR or --qdrant-url URL "
        "(or --embedding-model, which uses the default data directory)",
    }[name]


def _describe(component: object) -> str | None:
    for attribute in ("name", "location", "source"):
        value = getattr(component, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None
