"""Text embedders: Qwen3-Embedding (packed, exact), sentence-transformers, remote endpoints.

``Embedder.from_pretrained`` picks the implementation:

- an ``http(s)://`` URL -> :class:`RemoteEmbedder` (an OpenAI-compatible ``/v1/embeddings``);
- a directory whose config says Qwen3 -> :class:`Qwen3Embedder` (even when it also has a
  sentence-transformers ``modules.json``, as the official repos do);
- any other model directory (sentence-transformers layout, BERT-like) ->
  :class:`SentenceTransformerEmbedder`.

All return L2-normalised float32 rows, so a dot product is the cosine similarity.

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
from pathlib import Path

import numpy as np

from finerank.errors import InvalidInputError, ModelLoadError, ServiceUnavailableError

QWEN3_EOS_TOKEN = "<|endoftext|>"
QWEN3_EOS_ID = 151643
QWEN3_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


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
    dimension: int
    max_dimension: int

    @abstractmethod
    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        """Embed passages as they are. Returns ``[len(texts), dimension]`` float32."""

    @abstractmethod
    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Embed search queries (with the model's query prompt and ``instruction``)."""

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` (an estimate when no tokenizer is at hand)."""
        from finerank.retrieval.chunkers import count_tokens

        return count_tokens(text)

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
    ) -> Embedder:
        """Load an embedder (see the module docstring for how the kind is chosen).

        ``dimensions`` fixes a smaller output size (Matryoshka: cut, then normalise).

        Example:
            >>> Embedder.from_pretrained("/no/such/model")
            Traceback (most recent call last):
            ...
            finerank.errors.ModelLoadError: embedding model directory not found: /no/such/model (pass a local directory holding config.json, weights and tokenizer files, or a hub id such as Qwen/Qwen3-Reranker-0.6B)
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
            )
        return SentenceTransformerEmbedder(path, device=device, dimensions=dimensions)


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
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from finerank.models.loading import pick_device, pick_dtype
        from finerank.models.qwen3 import PackedDecoder

        self.path = Path(path)
        self.name = self.path.name
        self.source = str(path)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if max_length < 2:
            raise InvalidInputError("max_length must be at least 2")
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
            model = AutoModel.from_pretrained(str(self.path), dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load Qwen3 embedding model from {path}: {exc}") from exc
        # AutoModel on a *ForCausalLM checkpoint gives the bare decoder, as the model card does
        self.model = getattr(model, "model", model).to(self.device).eval()
        self.decoder = PackedDecoder(self.model)
        eos = self.tokenizer.convert_tokens_to_ids(QWEN3_EOS_TOKEN)
        self.eos_id = int(eos) if isinstance(eos, int) else QWEN3_EOS_ID
        self.max_dimension = int(self.model.config.hidden_size)
        self.default_dimensions = self.check_dimensions(dimensions)
        self.dimension = self.default_dimensions or self.max_dimension
        self._lock = threading.Lock()  # one forward at a time: the model is not re-entrant
        self._torch = torch

    def _encode(self, texts: list[str], share_key: object) -> list:
        from finerank.models.base import EncodedPair

        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
        items = []
        for row in ids["input_ids"]:
            row = list(row[: self.max_length - 1])
            items.append(EncodedPair(tuple(row + [self.eos_id]), share_key))
        return items

    def _run(self, items: list, dimensions: int | None) -> np.ndarray:
        from finerank.engine.packing import plan_packs

        dimensions = self.check_dimensions(dimensions) or self.default_dimensions
        out = np.zeros((len(items), self.max_dimension), dtype=np.float32)
        if not items:
            return out[:, : dimensions or self.max_dimension]
        with self._lock:
            for pack in plan_packs(items, self.max_batch_tokens):
                hidden = self.decoder.last_hidden(pack).to(self._torch.float32).cpu().numpy()
                out[pack.item_indices] = hidden
        return _normalise(out, dimensions)

    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        return self._run(self._encode(_check_texts(texts), None), dimensions)

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        prompts = [format_qwen3_query(q, instruction) for q in _check_texts(texts, "queries")]
        return self._run(self._encode(prompts, ("query", instruction)), dimensions)

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` (end token included, after truncation)."""
        return min(len(self.tokenizer.encode(text, add_special_tokens=False)) + 1, self.max_length)


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
    ):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ModelLoadError(
                "sentence-transformers is needed for this model: pip install sentence-transformers"
            ) from exc
        from finerank.models.loading import pick_device

        self.path = Path(path)
        self.name = self.path.name if self.path.name != "model" else self.path.parent.name
        self.source = str(path)
        torch_device = pick_device(device)
        try:
            self.model = SentenceTransformer(
                str(self.path), device=str(torch_device), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load sentence-transformers model {path}: {exc}") from exc
        self.batch_size = batch_size
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.max_dimension = int(dimension())
        self.default_dimensions = self.check_dimensions(dimensions)
        self.dimension = self.default_dimensions or self.max_dimension
        self._lock = threading.Lock()

    def _embed(self, texts: list[str], prompt_name: str | None, dimensions: int | None):
        dimensions = self.check_dimensions(dimensions) or self.default_dimensions
        if not texts:
            return np.zeros((0, dimensions or self.max_dimension), dtype=np.float32)
        with self._lock:
            matrix = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
                prompt_name=prompt_name,
            )
        return _normalise(np.asarray(matrix, dtype=np.float32), dimensions)

    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        return self._embed(_check_texts(texts), None, dimensions)

    def count_tokens(self, text: str) -> int:
        ids = self.model.tokenizer(text)["input_ids"]
        return min(len(ids), int(self.model.max_seq_length or len(ids)))

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        prompt = "query" if "query" in (self.model.prompts or {}) else None
        return self._embed(_check_texts(texts, "queries"), prompt, dimensions)


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
        self.default_dimensions = dimensions
        probe = self._request(["dimension probe"], dimensions)
        self.max_dimension = probe.shape[1] if dimensions is None else 1 << 30
        self.dimension = probe.shape[1]

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

    def _embed(self, texts: list[str], dimensions: int | None) -> np.ndarray:
        dimensions = dimensions or self.default_dimensions
        parts = [
            self._request(texts[i : i + self.batch_size], dimensions)
            for i in range(0, len(texts), self.batch_size)
        ]
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _normalise(np.concatenate(parts), None)

    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        return self._embed(_check_texts(texts), dimensions)

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        queries = _check_texts(texts, "queries")
        if instruction:
            queries = [format_qwen3_query(q, instruction) for q in queries]
        return self._embed(queries, dimensions)

    def close(self) -> None:
        self._client.close()
