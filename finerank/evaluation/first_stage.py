"""First-stage retrievers for the evaluation harness.

A first stage indexes a corpus once and returns, per query, up to ``k`` document ids best
first. ``finerank eval`` measures the product, so the stages here run finerank's own
retrieval code wherever it exists.

Example:
    >>> stage = Bm25sFirstStage()
    >>> stage.index({"a": "the wing in a slipstream", "b": "heat conduction in slabs"})
    >>> stage.search({"q": "slipstream wing"}, k=1)
    {'q': [('a', ...)]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from finerank.errors import InvalidInputError

Ranking = list[tuple[str, float]]


class FirstStage(Protocol):
    """What the harness needs from a first stage."""

    name: str

    def index(
        self, corpus: Mapping[str, str], documents: Mapping[str, str] | None = None
    ) -> None: ...

    def search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]: ...


class Bm25sFirstStage:
    """Okapi BM25 (k1=1.5, b=0.75, English stopwords removed) from the ``bm25s`` package."""

    name = "bm25"

    def __init__(self) -> None:
        self._retriever = None
        self._ids: list[str] = []

    def index(self, corpus: Mapping[str, str], documents: Mapping[str, str] | None = None) -> None:
        """Index ``corpus`` (doc id -> text); ``documents`` is not used (plain BM25)."""
        import bm25s

        self._ids = list(corpus)
        retriever = bm25s.BM25()
        tokens = bm25s.tokenize(list(corpus.values()), stopwords="en", show_progress=False)
        retriever.index(tokens, show_progress=False)
        self._retriever = retriever

    def for_mode(self, mode: str) -> Bm25sFirstStage:
        """Itself for ``bm25`` (its only mode)."""
        if mode != "bm25":
            raise InvalidInputError(
                f"--first-stage {mode} needs finerank's retrieval extra: "
                "pip install 'finerank[retrieval]'"
            )
        return self

    def search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        import bm25s

        if self._retriever is None:
            raise RuntimeError("call index(corpus) before search()")
        k = min(k, len(self._ids))
        tokens = bm25s.tokenize(list(queries.values()), stopwords="en", show_progress=False)
        positions, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        return {
            query_id: [
                (self._ids[int(p)], float(s))
                for p, s in zip(positions[row], scores[row], strict=True)
                if float(s) > 0.0  # a zero score means no query term matched
            ]
            for row, query_id in enumerate(queries)
        }


class ProductFirstStage:
    """finerank's own first stage: the corpus goes into an embedded store (Qdrant Edge in a
    temporary directory, one chunk per document) and queries run through
    :meth:`finerank.retrieval.search.SearchService.recall_batch`, exactly as ``finerank
    search`` runs them, in ``mode`` (any of :data:`finerank.retrieval.search.SEARCH_MODES`;
    ``dense`` and ``hybrid`` modes need ``embedder``). ``fusion``, ``prf`` and ``context``
    (document context) are the service's (default: those of a default
    :class:`~finerank.settings.Settings`);
    ``instruction`` goes into query embeddings (Qwen3 embedders use it).

    The corpus is indexed once; :meth:`for_mode` gives the same index under another mode, so
    ``finerank eval`` compares modes without indexing again.
    """

    COLLECTION = "eval"

    def __init__(
        self,
        mode: str = "bm25",
        *,
        embedder=None,
        fusion=None,
        prf=None,
        context=None,
        instruction: str | None = None,
        max_chunk_tokens: int = 100_000,
    ):
        check_mode(mode, embedder)
        self.name = mode
        self.mode = mode
        self.embedder = embedder
        self.fusion = fusion
        self.prf = prf
        self.context = context
        self.instruction = instruction
        self.max_chunk_tokens = max_chunk_tokens
        self._shared: dict = {}  # the temporary directory and the service, shared by views

    def for_mode(self, mode: str) -> ProductFirstStage:
        """This stage under ``mode``, sharing its index (index the corpus once)."""
        check_mode(mode, self.embedder)
        view = ProductFirstStage.__new__(ProductFirstStage)
        view.__dict__.update(self.__dict__)
        view.name = view.mode = mode
        return view

    @property
    def indexed(self) -> bool:
        return self._shared.get("service") is not None

    def index(self, corpus: Mapping[str, str], documents: Mapping[str, str] | None = None) -> None:
        """Index ``corpus`` (doc id -> text), one chunk per record; a record listed in
        ``documents`` (doc id -> document, :attr:`BeirDataset.documents`) is a chunk of
        that document's file, the others each a file of their own."""
        import tempfile

        from finerank.retrieval.chunkers import Document, get_chunker
        from finerank.retrieval.ingest import ingest_documents
        from finerank.retrieval.search import SearchService
        from finerank.retrieval.store import VectorStore

        self.close()
        self._shared["tmp"] = tempfile.TemporaryDirectory(prefix="finerank-eval-")
        store = VectorStore.open(data_dir=self._shared["tmp"].name)
        documents = [
            Document(
                source=doc_id,
                text=text,
                metadata={"doc_id": doc_id},
                file=(documents or {}).get(doc_id, doc_id),
            )
            for doc_id, text in corpus.items()
            if text.strip()
        ]
        ingest_documents(
            documents,
            store=store,
            collection=self.COLLECTION,
            chunker=get_chunker("window", max_tokens=self.max_chunk_tokens),
            embedder=self.embedder,
            batch_size=256,
        )
        self._shared["service"] = SearchService(
            store, embedder=self.embedder, fusion=self.fusion, prf=self.prf, context=self.context
        )

    def search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        service = self._shared.get("service")
        if service is None:
            raise RuntimeError("call index(corpus) before search()")
        asked = {query_id: query for query_id, query in queries.items() if query.strip()}
        runs = service.recall_batch(
            self.COLLECTION,
            list(asked.values()),
            mode=self.mode,
            recall_k=k,
            instruction=self.instruction,
        )
        rankings: dict[str, Ranking] = {query_id: [] for query_id in queries}
        for query_id, hits in zip(asked, runs, strict=True):
            seen: set[str] = set()
            for hit in hits:
                metadata = hit.payload.get("metadata") or {}
                doc_id = str(metadata.get("doc_id", hit.payload["source"]))
                if doc_id not in seen:  # a document split into chunks counts once
                    seen.add(doc_id)
                    rankings[query_id].append((doc_id, hit.score))
        return rankings

    def close(self) -> None:
        """Close the store and delete its temporary directory (for every view)."""
        service = self._shared.pop("service", None)
        if service is not None:
            service.store.close()
        tmp = self._shared.pop("tmp", None)
        if tmp is not None:
            tmp.cleanup()


def check_mode(mode: str, embedder) -> None:
    """A mode ``finerank eval`` can run: a search mode, with an embedder if it is dense."""
    from finerank.retrieval.search import SEARCH_MODES

    if mode not in SEARCH_MODES:
        raise InvalidInputError(
            f"unknown first stage {mode!r}: use one of {', '.join(SEARCH_MODES)}"
        )
    if mode.partition("+")[0] in ("dense", "hybrid") and embedder is None:
        raise InvalidInputError(f"--first-stage {mode} needs --embedding-model")


def make_first_stage(
    mode: str, *, embedder=None, settings=None, instruction: str | None = None
) -> FirstStage:
    """The first stage ``finerank eval --first-stage MODE`` runs: finerank's retrieval
    package (:class:`ProductFirstStage`, with ``embedder`` for dense / hybrid, fusion and
    feedback from ``settings``, ``instruction`` for query embeddings); ``bm25s`` BM25 when
    that package is not installed."""
    try:
        import finerank.retrieval.search  # noqa: F401
    except ImportError:
        if mode != "bm25":
            raise InvalidInputError(
                f"--first-stage {mode} needs finerank's retrieval extra: "
                "pip install 'finerank[retrieval]'"
            ) from None
        return Bm25sFirstStage()
    from finerank.retrieval.context import DocumentContext
    from finerank.retrieval.expansion import PrfConfig
    from finerank.retrieval.search import fusion_from_settings
    from finerank.settings import Settings

    settings = settings or Settings()
    return ProductFirstStage(
        mode,
        embedder=embedder,
        fusion=fusion_from_settings(settings),
        prf=PrfConfig.from_settings(settings),
        context=DocumentContext.from_settings(settings),
        instruction=instruction,
    )
