"""One frozen settings object for every finerank entry point.

Values come from (highest first) explicit keyword arguments / CLI flags, ``FINERANK_*``
environment variables, then the defaults below. Lists (``api_keys``) are read from the
environment as JSON (``FINERANK_API_KEYS='["k1","k2"]'``) or comma separated.

Example:
    >>> from finerank.settings import Settings
    >>> Settings(max_length=512).max_length
    512
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LongDocumentMode = Literal["truncate", "chunk"]


class Settings(BaseSettings):
    """Configuration shared by the CLI, the HTTP server, the web page and Ray."""

    model_config = SettingsConfigDict(
        env_prefix="FINERANK_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    # --- model -----------------------------------------------------------------------------
    model: str | None = Field(
        None,
        description="Reranker: a local directory or a hub id; `finerank serve` without one "
        "serves `Qwen/Qwen3-Reranker-0.6B`.",
    )
    served_model_name: str | None = Field(
        None, description="Name clients see and send as `model`; default: the model's last part."
    )
    family: Literal["qwen3", "seq-cls"] | None = Field(
        None, description="Model family; default: detected from config.json."
    )
    device: str = Field("auto", description="`auto` (CUDA if present), `cpu`, `cuda`, `cuda:N`.")
    dtype: str = Field(
        "auto",
        description="`auto` (bf16 on CUDA, fp32 on CPU), `float32`, `bfloat16`, `float16` (CUDA).",
    )
    max_length: int = Field(
        8192, ge=16, le=131072, description="Tokens per pair, template included."
    )
    instruction: str | None = Field(
        None, description="Qwen3 instruction for requests that give none; default: the reference's."
    )
    quantize: Literal["none", "int8"] = Field(
        "none", description="`int8`: dynamic int8 linear layers (CPU, from float32 weights)."
    )

    # --- engine ----------------------------------------------------------------------------
    max_batch_tokens: int = Field(16384, ge=256, description="Token budget of one forward pass.")
    long_document: LongDocumentMode = Field(
        "truncate", description="Default for documents longer than the context: cut or window."
    )
    chunk_overlap: float = Field(0.125, ge=0.0, lt=0.9, description="Window overlap in chunk mode.")
    share_prefix: bool = Field(
        True, description="Compute system prompt + instruction + query once per pack."
    )

    # --- HTTP server -----------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address (`0.0.0.0` exposes the server).")
    port: int = Field(8000, ge=0, le=65535, description="Port; 0: any free port.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted bearer keys; none: open (no key needed); an empty key refuses "
        "to start.",
    )
    protect_health: bool = Field(
        False, description="Also require a key on `/health`, `/metrics` and the API docs."
    )
    session_hours: float = Field(
        12.0, gt=0, le=24 * 365, description="Lifetime of a browser session after signing in."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="`Host` names answered besides `localhost` / `127.0.0.1` / `[::1]` on a "
        "loopback bind (`*`: any name).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API cross-site (never with cookies).",
    )
    max_documents_per_request: int = Field(
        1000, ge=1, description="Documents (or score pairs, embedding inputs) per request."
    )
    max_tokens_per_request: int = Field(
        2_000_000, ge=1, description="Tokens per request, template included."
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Request body size.")
    body_timeout_s: float = Field(
        60.0, gt=0.0, description="Time a request body may take to arrive before `408`."
    )
    header_timeout_s: float = Field(
        30.0,
        gt=0.0,
        description="Time a request head (line and headers) may take to arrive before the "
        "connection is closed.",
    )
    max_queue_pairs: int = Field(20_000, ge=1, description="Pairs waiting before `429`.")
    batch_wait_ms: float = Field(
        2.0, ge=0.0, description="Wait to fill a batch across requests (only under load)."
    )
    ui: bool = Field(False, description="Mount the web page at `/ui/` (serve).")
    ui_max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest file the page accepts as an upload."
    )
    ui_max_pending_uploads: int = Field(
        16, ge=1, description="Uploads the page keeps before reading them (oldest evicted)."
    )

    # --- retrieval -------------------------------------------------------------------------
    embedding_model: str | None = Field(
        None,
        description="Embedding model (directory, hub id or http(s) endpoint): "
        "`/v1/embeddings`, dense and hybrid search (a store in the default data dir comes with "
        "it); none at index time: BM25 only.",
    )
    data_dir: Path | None = Field(
        None,
        description="Embedded store directory; default: `<user data dir>/finerank/qdrant`. "
        "Given to `serve`, it mounts the search and collection routes (BM25 needs no "
        "embedding model).",
    )
    qdrant_url: str | None = Field(
        None, description="A Qdrant server or cluster instead of the embedded store."
    )
    qdrant_api_key: str | None = Field(None, description="API key of that Qdrant server.")
    min_free_disk_mb: int = Field(
        64,
        ge=0,
        description="Free space ingest keeps on the embedded store's disk: below it ingest "
        "stops with `507` (a full disk would crash the embedded store).",
    )
    fusion: Literal["rrf", "dbsf"] = Field(
        "dbsf",
        description="How `hybrid` fuses BM25 and dense: `dbsf` (score-normalized) or `rrf`.",
    )
    rrf_k: int = Field(2, ge=1, description="RRF rank constant (Qdrant's default 2; paper: 60).")
    fusion_sparse_weight: float = Field(
        1.0, gt=0.0, description="Weight of the BM25 branch in hybrid fusion."
    )
    fusion_dense_weight: float = Field(
        1.0, gt=0.0, description="Weight of the dense branch in hybrid fusion."
    )
    prf_docs: int = Field(
        5, ge=1, le=100, description="First-pass BM25 hits used as feedback by the `+prf` modes."
    )
    prf_terms: int = Field(
        100, ge=1, le=10_000, description="Expansion terms the `+prf` modes keep (the heaviest)."
    )
    prf_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of the expansion in a `+prf` query (0: none)."
    )
    document_weight: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description="How much a chunk's document (its file's other chunks in the first pass) "
        "lifts it in the `bm25` modes (0: off).",
    )
    document_depth: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="First-pass depth (chunks) in which `document_weight` finds a chunk's "
        "document (and documents `document_index_weight` ranks).",
    )
    document_index_weight: float = Field(
        0.4,
        ge=0.0,
        le=10.0,
        description="How much a chunk's document's own BM25 score (the document index: all "
        "its chunks as one text, IDF over documents) lifts it in the `bm25` modes (0: off).",
    )
    max_query_chars: int = Field(
        4096, ge=1, description="Characters of a `/v1/search` query (`413` above)."
    )
    max_recall_k: int = Field(
        1000,
        ge=1,
        description="First-stage candidates a search may ask for (`recall_k`; default 100, or "
        "this when lower).",
    )
    max_rerank_k: int = Field(
        1000,
        ge=1,
        description="Candidates one search reranks (`rerank_k`; without it, every candidate up "
        "to this and `max_documents_per_request`).",
    )
    max_chunks_per_request: int = Field(
        10_000,
        ge=1,
        description="Chunks one `POST /v1/collections/{name}/documents` may produce (refused "
        "before anything is written).",
    )

    @field_validator("api_keys", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            parts = [part.strip() for part in text.split(",")]
            if info.field_name == "api_keys":
                return parts  # empty parts are refused below, not dropped
            return [part for part in parts if part]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        checked = []
        for key in keys:
            key = key.strip()
            if not key:
                raise ValueError(
                    "an API key is empty: give real keys (--api-key KEY, FINERANK_API_KEYS="
                    "'k1,k2'), or none at all for an open server"
                )
            if any(not (33 <= ord(c) <= 126) for c in key):
                raise ValueError(
                    "an API key holds a space, a control or a non-ASCII character: "
                    "keys travel in an HTTP header, use printable ASCII"
                )
            checked.append(key)
        return checked

    @property
    def public_model_name(self) -> str:
        """The name clients see in ``/v1/models`` and must send in ``model``."""
        if self.served_model_name:
            return self.served_model_name
        if self.model:
            return self.model.rstrip("/").split("/")[-1] if "/" in self.model else self.model
        return "finerank"
