"""Text embedders: Qwen3-Embedding (packed, exact), sentence-transformers, remote endpoints.

``Embedder.from_pretrained`` picks the implementation:

- an ``http(s)://`` URL -> :class:`RemoteEmbedder` (an OpenAI-compatible ``/v1/embeddings``);
- a directory whose config says Qwen3 -> :class:`Qwen3Embedder` (even when it also has a
  sentence-transformers ``modules.json``, as the official repos do);
- any other model directory (sentence-transformers layout, BERT-like) ->
  :class:`SentenceTransformerEmbedder`.

All return L2-normalised float32 rows, so a dot product is the cosine similarity.

Every embedder works in two steps, so that a server can batch many requests together
(:class:`~finerank.retrieval.embedding_service.EmbeddingService` drives them through the same
:class:`~finerank.engine.scheduler.BatchScheduler` as the reranker): :meth:`Embedder.prepare`
tokenizes (cutting a long text to what the model reads *before* tokenizing it, so a 10 MB
input costs what its first ``max_length`` tokens cost) and :meth:`Embedder.run` embeds prepared
inputs in one call; :meth:`Embedder.finish` cuts and normalises. ``embed_documents`` /
``embed_queries`` are the three in a row, with the scheduler's out-of-memory halving.

Example:
    >>> from finerank.retrieval.embedder import Embedder
    >>> embedder = Embedder.from_pretrained("/models/Qwen3-Embedding-0.6B")  # doctest: +SKIP
    >>> embedder.embed_queries(["capital of China?"]).shape  # doctest: +SKIP
    (1, 1024)
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from finerank.errors import InvalidInputError, ModelLoadError, ServiceUnavailableError

if TYPE_CHECKING:
    from finerank.models.fused import CompileMode

QWEN3_EOS_TOKEN = "<|endoftext|>"
QWEN3_EOS_ID = 151643
QWEN3_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
InputType = Literal["document", "query"]
INPUT_TYPES: tuple[str, ...] = ("document", "query")


def format_qwen3_query(query: str, task: str | None = None) -> str:
    """The Qwen3-Embedding query prompt (no space after ``Query:``, as in the model card).

    Example:
        >>> format_qwen3_query("what is BM25?", "Find passages")
        'Instruct: Find passages\\nQuery:what is BM25?'
    """
    return f"Instruct: {task or QWEN3_DEFAULT_TASK}\nQuery:{query}"


def _check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError(f"{what} must be a list of strings, not one string")
    out = list(texts)
    for index, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidInputError(f"{what}[{index}] must be a string, got {type(text).__name__}")
    return out


@dataclass(frozen=True)
class EmbeddingInput:
    """One prepared input: the token ids the model reads (cut to its length), what may share
    a prefix with it (``share_key``: Qwen3 queries with one instruction), and, for models that
    tokenize again themselves, the (cut) ``text``. ``tokens`` is its cost in a batch."""

    ids: tuple[int, ...]
    share_key: object = None
    text: str | None = None
    tokens: int = 0

    @property
    def cost(self) -> int:
        return self.tokens or len(self.ids)


def input_cost(item: EmbeddingInput) -> int:
    """Tokens one input costs in a batch (the scheduler's cost function)."""
    return item.cost


# First guess of how many characters hold `budget` tokens (prose rarely averages more than
# ~4 characters per token, CJK ~1.5); a text with longer tokens just doubles the cut.
_CUT_CHARS_PER_TOKEN = 4
_CUT_SLACK_CHARS = 256


def cut_texts(tokenizer, texts: Sequence[str], budget: int) -> list[tuple[str, list[int]]]:
    """For each text, a prefix whose tokens begin with the text's first ``budget`` tokens,
    and the prefix's token ids (no special tokens), without tokenizing all of a huge text.

    A prefix of about ``budget`` tokens is tokenized; its tokens count only up to a boundary
    no continuation of the text can move (see
    :func:`finerank.models.qwen3.encode_truncated`, which keeps the reranker exact the same
    way); with fewer than ``budget`` such tokens the cut doubles. Texts shorter than the cut,
    and tokenizers without a pre-tokenizer, are tokenized whole.

    Example:
        >>> [ids[:3] for _, ids in cut_texts(tokenizer, ["a very long text ..."], 3)]
        ... # doctest: +SKIP
        [[64, 1602, 1293]]
    """
    from finerank.models.qwen3 import _stable_tokens

    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    results: list[tuple[str, list[int]] | None] = [None] * len(texts)
    cuts = {i: budget * _CUT_CHARS_PER_TOKEN + _CUT_SLACK_CHARS for i in range(len(texts))}
    if pre is None:
        cuts = {i: len(text) for i, text in enumerate(texts)}
        added_len = 0
    else:
        added_len = max(
            (len(t.content) for t in backend.get_added_tokens_decoder().values()), default=0
        )
    pending = list(range(len(texts)))
    while pending:
        whole = [i for i in pending if cuts[i] >= len(texts[i])]
        cut = [i for i in pending if cuts[i] < len(texts[i])]
        if whole:
            encoded = tokenizer(
                [texts[i] for i in whole], add_special_tokens=False, return_attention_mask=False
            )
            for i, row in zip(whole, encoded["input_ids"], strict=True):
                results[i] = (texts[i], list(row))
        pending = []
        if not cut:
            break
        prefixes = [texts[i][: cuts[i]] for i in cut]
        encoded = tokenizer(
            prefixes,
            add_special_tokens=False,
            return_attention_mask=False,
            return_offsets_mapping=True,
        )
        for i, prefix, row, offsets in zip(
            cut, prefixes, encoded["input_ids"], encoded["offset_mapping"], strict=True
        ):
            if len(row) > budget and _stable_tokens(pre, prefix, offsets, added_len) >= budget:
                results[i] = (prefix, list(row))
            else:
                cuts[i] *= 2
                pending.append(i)
    return results  # type: ignore[return-value]


def _check_inputs(texts: Sequence[str], input_type: object) -> list[str]:
    if input_type not in INPUT_TYPES:
        raise InvalidInputError(f"input_type must be 'document' or 'query', got {input_type!r}")
    return _check_texts(texts, "queries" if input_type == "query" else "texts")


def _normalise(matrix: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka truncation (first ``dimensions`` values) then L2 normalisation."""
    if dimensions is not None:
        matrix = matrix[:, :dimensions]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class Embedder(ABC):
    """Turns texts into unit vectors. Queries may carry an instruction; documents do not.

    ``dimension`` is the output size (after ``dimensions`` truncation); ``name`` identifies the
    model (a collection records it and refuses queries embedded by another model).
    """

    name: str
    source: str
    dimension: int
    max_dimension: int
    default_dimensions: int | None = None
    max_batch_tokens: int = 16384

    @abstractmethod
    def prepare(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        instruction: str | None = None,
    ) -> list[EmbeddingInput]:
        """Tokenize ``texts`` (queries with the model's query prompt and ``instruction``),
        each cut to what the model reads before it is tokenized. No model call.

        Args:
            texts: the texts (strings).
            input_type: ``document`` (as they are) or ``query`` (query prompt).
            instruction: the task of a Qwen3 query prompt (others ignore it).

        Returns:
            One :class:`EmbeddingInput` per text, in order.
        """

    @abstractmethod
    def run(self, items: Sequence[EmbeddingInput]) -> np.ndarray:
        """Embed prepared inputs in one call: ``[len(items), max_dimension]`` float32 rows,
        not yet normalised (see :meth:`finish`). Not safe to call from two threads at once."""

    def warm_up(self) -> float | None:
        """Run a short forward when the next one would compile kernels, so that a server pays
        for it at start; the seconds it took, or None when nothing was due (the default)."""
        return None

    def finish(self, rows: Sequence[np.ndarray], dimensions: int | None = None) -> np.ndarray:
        """Rows of :meth:`run` as unit vectors of ``dimensions`` (Matryoshka: cut first)."""
        dimensions = self.check_dimensions(dimensions) or self.default_dimensions
        if not len(rows):
            return np.zeros((0, dimensions or self.max_dimension), dtype=np.float32)
        return _normalise(np.stack(rows).astype(np.float32, copy=False), dimensions)

    def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        instruction: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """``prepare`` then ``run`` (halved and retried on out-of-memory) then ``finish``."""
        from finerank.engine.scheduler import run_halving

        self.check_dimensions(dimensions)
        items = self.prepare(texts, input_type=input_type, instruction=instruction)
        rows = run_halving(self.run, items) if items else []
        return self.finish(rows, dimensions)

    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        """Embed passages as they are. Returns ``[len(texts), dimension]`` float32.

        Example:
            >>> embedder.embed_documents(["Beijing is the capital."]).shape  # doctest: +SKIP
            (1, 1024)
        """
        return self.embed(texts, dimensions=dimensions)

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Embed search queries (with the model's query prompt and ``instruction``).

        Example:
            >>> embedder.embed_queries(["capital of China?"]).shape  # doctest: +SKIP
            (1, 1024)
        """
        return self.embed(texts, input_type="query", instruction=instruction, dimensions=dimensions)

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` (after the cut to its length)."""
        return self.prepare([text])[0].cost

    def check_dimensions(self, dimensions: int | None) -> int | None:
        """Validate a requested output size against what the model supports."""
        if dimensions is None:
            return None
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise InvalidInputError("dimensions must be a positive integer")
        if dimensions > self.max_dimension:
            raise InvalidInputError(
                f"dimensions={dimensions} is larger than the model's {self.max_dimension}"
            )
        return dimensions

    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        dimensions: int | None = None,
        max_length: int = 8192,
        max_batch_tokens: int = 16384,
        api_key: str | None = None,
        remote_model: str | None = None,
        compile: CompileMode = "auto",
    ) -> Embedder:
        """Load an embedder (see the module docstring for how the kind is chosen).

        ``dimensions`` fixes a smaller output size (Matryoshka: cut, then normalise).
        ``compile``: whether a Qwen3 model's CPU kernels compile (``compile=`` of
        :meth:`finerank.Reranker.from_pretrained`).

        Example:
            >>> Embedder.from_pretrained("/no/such/model")
            Traceback (most recent call last):
            ...
            finerank.errors.ModelLoadError: embedding model directory not found: /no/such/model (pass a local directory holding config.json, weights and tokenizer files, or a hub id such as Qwen/Qwen3-Embedding-0.6B)
        """  # noqa: E501
        text = str(name_or_path)
        if text.startswith(("http://", "https://")):
            return RemoteEmbedder(text, model=remote_model, api_key=api_key, dimensions=dimensions)
        from finerank.models.loading import check_model_dir, resolve_model_dir

        path = resolve_model_dir(text, what="embedding model")
        config = check_model_dir(path, what="embedding model")
        architectures = config.get("architectures") or []
        # before modules.json: the Qwen3-Embedding repos also ship a sentence-transformers config
        if config.get("model_type") == "qwen3" or any(a.startswith("Qwen3") for a in architectures):
            return Qwen3Embedder(
                path,
                device=device,
                dtype=dtype,
                dimensions=dimensions,
                max_length=max_length,
                max_batch_tokens=max_batch_tokens,
                compile=compile,
            )
        return SentenceTransformerEmbedder(
            path, device=device, dimensions=dimensions, max_batch_tokens=max_batch_tokens
        )


class Qwen3Embedder(Embedder):
    """Qwen3-Embedding (0.6B/4B/8B): last-token pooling, exact, on packed sequences.

    Texts are tokenized alone, cut to ``max_length - 1`` tokens and closed with
    ``<|endoftext|>`` (what the official tokenizer's post-processor appends); the final-normed
    hidden state at that token is the embedding. Sequences run packed (no padding), sorted by
    length into passes of ``max_batch_tokens`` tokens; queries with one instruction share its
    prefix. Equals the model card's left-padded ``AutoModel`` code up to float rounding.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        dimensions: int | None = None,
        max_length: int = 8192,
        max_batch_tokens: int = 16384,
        compile: CompileMode = "auto",
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from finerank.models.allocator import keep_buffers_in_heap
        from finerank.models.loading import pick_device, pick_dtype, reading_model_files
        from finerank.models.qwen3 import PackedDecoder

        self.path = Path(path)
        self.name = self.path.name
        self.source = str(path)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if self.device.type == "cpu":
            keep_buffers_in_heap()
        if max_length < 2:
            raise InvalidInputError("max_length must be at least 2")
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        with reading_model_files(path, what="Qwen3 embedding model"):
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
            model = AutoModel.from_pretrained(str(self.path), dtype=self.dtype)
        # AutoModel on a *ForCausalLM checkpoint gives the bare decoder, as the model card does
        self.model = getattr(model, "model", model).to(self.device).eval()
        self.decoder = PackedDecoder(self.model, compile=compile)
        eos = self.tokenizer.convert_tokens_to_ids(QWEN3_EOS_TOKEN)
        self.eos_id = int(eos) if isinstance(eos, int) else QWEN3_EOS_ID
        self.max_dimension = int(self.model.config.hidden_size)
        self.default_dimensions = self.check_dimensions(dimensions)
        self.dimension = self.default_dimensions or self.max_dimension
        self._lock = threading.Lock()  # one forward at a time: the model is not re-entrant
        self._torch = torch

    def prepare(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        instruction: str | None = None,
    ) -> list[EmbeddingInput]:
        texts = _check_inputs(texts, input_type)
        share_key = None
        if input_type == "query":
            texts = [format_qwen3_query(q, instruction) for q in texts]
            share_key = ("query", instruction)
        if not texts:
            return []
        budget = self.max_length - 1
        return [
            EmbeddingInput(tuple(ids[:budget]) + (self.eos_id,), share_key)
            for _, ids in cut_texts(self.tokenizer, texts, budget)
        ]

    def warm_up(self) -> float | None:
        """Embed two short texts when the next forward would compile kernels (see
        :meth:`finerank.engine.engine.ScoringEngine.warm_up`); the seconds it took, or None."""
        from finerank.models.fused import WARM_UP_TEXTS, timed_warm_up

        if not self.decoder.kernels.pending:
            return None
        return timed_warm_up(lambda: self.run(self.prepare(list(WARM_UP_TEXTS))))

    def run(self, items: Sequence[EmbeddingInput]) -> np.ndarray:
        from finerank.engine.packing import plan_packs

        out = np.zeros((len(items), self.max_dimension), dtype=np.float32)
        with self._lock, self._torch.inference_mode():
            for pack in plan_packs(items, self.max_batch_tokens):
                hidden = self.decoder.last_hidden(pack).to(self._torch.float32).cpu().numpy()
                out[pack.item_indices] = hidden
        return out


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model directory (pooling and normalisation from its config).

    Instructions are ignored unless the model defines a ``query`` prompt, which is then used.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dimensions: int | None = None,
        batch_size: int = 64,
        max_batch_tokens: int = 16384,
    ):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ModelLoadError(
                "sentence-transformers is needed for this model: pip install sentence-transformers"
            ) from exc
        from finerank.models.allocator import keep_buffers_in_heap
        from finerank.models.loading import pick_device, reading_model_files

        self.path = Path(path)
        self.name = self.path.name if self.path.name != "model" else self.path.parent.name
        self.source = str(path)
        torch_device = pick_device(device)
        if torch_device.type == "cpu":
            keep_buffers_in_heap()
        with reading_model_files(path, what="sentence-transformers model"):
            self.model = SentenceTransformer(
                str(self.path), device=str(torch_device), local_files_only=True
            )
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.max_dimension = int(dimension())
        self.default_dimensions = self.check_dimensions(dimensions)
        self.dimension = self.default_dimensions or self.max_dimension
        self._lock = threading.Lock()

    def prepare(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        instruction: str | None = None,
    ) -> list[EmbeddingInput]:
        texts = _check_inputs(texts, input_type)
        prompt = None
        if input_type == "query" and "query" in (self.model.prompts or {}):
            prompt = "query"
        tokenizer = self.model.tokenizer
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        limit = int(self.model.max_seq_length or tokenizer.model_max_length)
        budget = max(1, limit - specials)
        # the model tokenizes the (cut) text again itself, prompt included
        return [
            EmbeddingInput(tuple(ids[:budget]), prompt, text, min(len(ids), budget) + specials)
            for text, ids in cut_texts(tokenizer, texts, budget)
        ]

    def run(self, items: Sequence[EmbeddingInput]) -> np.ndarray:
        out = np.zeros((len(items), self.max_dimension), dtype=np.float32)
        groups: dict[object, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.share_key, []).append(index)
        with self._lock:
            for prompt, indices in groups.items():
                out[indices] = self.model.encode(
                    [items[i].text for i in indices],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                    prompt_name=prompt,
                )
        return out


class RemoteEmbedder(Embedder):
    """An OpenAI-compatible ``POST /v1/embeddings`` endpoint (finerank, vLLM, TEI, OpenAI).

    Queries with an ``instruction`` are sent in the Qwen3-Embedding prompt format (the server
    sees plain text, as OpenAI's API has no query/document distinction); queries without one
    and documents are sent as they are. ``base_url`` may end with or without ``/v1``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        timeout_s: float = 60.0,
        batch_size: int = 128,
        http_client=None,
    ):
        """``http_client``: an ``httpx.Client`` to use (custom TLS, proxies, tests)."""
        import httpx

        url = base_url.rstrip("/")
        if url.endswith("/embeddings"):
            url = url[: -len("/embeddings")]
        if not url.endswith("/v1"):
            url += "/v1"
        self.url = url + "/embeddings"
        self.model = model
        self.name = model or base_url
        self.source = base_url
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = http_client or httpx.Client(timeout=timeout_s, headers=headers)
        if http_client is not None and api_key:
            self._client.headers.update(headers)
        # the endpoint answers in `dimensions` (fixed here); requests may ask for fewer
        self.default_dimensions = dimensions
        probe = self._request(["dimension probe"], dimensions)
        self.max_dimension = self.dimension = int(probe.shape[1])
        self.max_batch_tokens = 1 << 20  # the endpoint batches itself

    def _request(self, texts: list[str], dimensions: int | None) -> np.ndarray:
        import httpx

        body: dict = {"input": texts, "encoding_format": "float"}
        if self.model:
            body["model"] = self.model
        if dimensions is not None:
            body["dimensions"] = dimensions
        try:
            response = self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"embedding endpoint {self.url} failed: {exc}") from exc
        if response.status_code != 200:
            raise ServiceUnavailableError(
                f"embedding endpoint {self.url} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        data = sorted(response.json()["data"], key=lambda row: row["index"])
        return np.asarray([row["embedding"] for row in data], dtype=np.float32)

    def prepare(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        instruction: str | None = None,
    ) -> list[EmbeddingInput]:
        from finerank.retrieval.chunkers import count_tokens

        texts = _check_inputs(texts, input_type)
        if input_type == "query" and instruction:
            texts = [format_qwen3_query(q, instruction) for q in texts]
        # the endpoint tokenizes (and cuts); the cost here is an estimate
        return [EmbeddingInput((), None, text, max(1, count_tokens(text))) for text in texts]

    def run(self, items: Sequence[EmbeddingInput]) -> np.ndarray:
        texts = [item.text or "" for item in items]
        parts = [
            self._request(texts[i : i + self.batch_size], self.default_dimensions)
            for i in range(0, len(texts), self.batch_size)
        ]
        if not parts:
            return np.zeros((0, self.max_dimension), dtype=np.float32)
        return np.concatenate(parts)

    def close(self) -> None:
        self._client.close()
