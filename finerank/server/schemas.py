"""Request and response bodies of every HTTP dialect, in one module.

One request schema accepts what Cohere (v1/v2), Jina, vLLM and TEI clients send for a rerank;
the route decides the response shape. Unknown fields are ignored (clients send extras such as
``rank_fields`` or ``truncate``), wrong types and missing fields are a 422 naming the field.
The retrieval routes (OpenAI embeddings, search, collections) have theirs in the last section.

Example:
    >>> RerankRequest.model_validate(
    ...     {"query": "q", "documents": ["a", {"text": "b"}], "top_k": 1}).document_texts()
    ['a', 'b']
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class DocumentIn(BaseModel):
    """A document given as an object (Cohere v1 / Jina); only ``text`` is read."""

    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(_Lenient):
    """Body of ``/rerank``, ``/v1/rerank`` and ``/v2/rerank``."""

    model: str | None = Field(None, description="Must be a served model name when given.")
    query: str
    documents: list[str | DocumentIn] | None = Field(
        None, description="Strings, or objects with a 'text' field."
    )
    texts: list[str] | None = Field(None, description="TEI's name for documents.")
    top_n: int | None = Field(
        None,
        ge=0,
        validation_alias=AliasChoices("top_n", "top_k"),
        description="Keep the best N (alias top_k); absent or 0 = all.",
    )
    return_documents: bool | None = Field(
        None, description="Include each document's text (default: true on /v1, false on /v2)."
    )
    return_text: bool = Field(False, description="TEI: include the text in each result.")
    raw_scores: bool = Field(False, description="TEI: return the logit instead of P(yes).")
    instruction: str | None = Field(
        None,
        validation_alias=AliasChoices("instruction", "instruct"),
        description="Task instruction (Qwen3; alias instruct).",
    )
    max_tokens_per_doc: int | None = Field(None, ge=1)
    long_document: Literal["truncate", "chunk"] | None = Field(
        None, description="truncate (reference behaviour) or chunk (best window wins)."
    )

    @field_validator("documents", mode="before")
    @classmethod
    def _document_entries(cls, value: object) -> object:
        # One clear message instead of one per member of the str | object union.
        if isinstance(value, list):
            for index, entry in enumerate(value):
                if isinstance(entry, str):
                    continue
                if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
                    raise ValueError(
                        f"documents[{index}] must be a string or an object with a string "
                        f"'text' field, got {type(entry).__name__}"
                    )
        return value

    @model_validator(mode="after")
    def _one_document_list(self) -> RerankRequest:
        if self.documents is None and self.texts is None:
            raise ValueError("send the documents to rank in 'documents' (or 'texts')")
        if self.documents is not None and self.texts is not None:
            raise ValueError("send either 'documents' or 'texts', not both")
        return self

    def document_texts(self) -> list[str]:
        """The documents as plain strings, in input order."""
        if self.texts is not None:
            return list(self.texts)
        assert self.documents is not None
        return [d if isinstance(d, str) else d.text for d in self.documents]

    @property
    def wanted_top_n(self) -> int | None:
        return self.top_n or None


class ScoreRequest(_Lenient):
    """Body of vLLM's ``/v1/score``: ``text_1`` (queries) against ``text_2`` (documents)."""

    model: str | None = None
    text_1: str | list[str]
    text_2: str | list[str]
    instruction: str | None = Field(None, validation_alias=AliasChoices("instruction", "instruct"))


# ---- responses ------------------------------------------------------------------------------
class DocumentOut(BaseModel):
    text: str


class SpanOut(BaseModel):
    """The character range of the window that scored best (``long_document="chunk"``)."""

    start: int
    end: int
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: DocumentOut | None = None
    span: SpanOut | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponseV1(BaseModel):
    """Jina / vLLM shape (``/v1/rerank``, ``/rerank``)."""

    id: str
    model: str
    usage: Usage
    results: list[RerankResult]


class BilledUnits(BaseModel):
    search_units: int


class Tokens(BaseModel):
    input_tokens: int
    output_tokens: int = 0


class ApiVersion(BaseModel):
    version: str = "2"


class MetaV2(BaseModel):
    api_version: ApiVersion = ApiVersion()
    billed_units: BilledUnits
    tokens: Tokens


class RerankResponseV2(BaseModel):
    """Cohere v2 shape (``/v2/rerank``)."""

    id: str
    results: list[RerankResult]
    meta: MetaV2


class TeiRank(BaseModel):
    """One entry of TEI's bare-list answer (``/rerank`` with ``texts``)."""

    index: int
    score: float
    text: str | None = None


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "finerank"
    kind: Literal["reranker", "embedding"] = Field(
        "reranker", description="What the model does: rerank routes or /v1/embeddings."
    )
    root: str | None = None
    max_model_len: int | None = None
    family: str | None = None
    dimensions: int | None = Field(None, description="Embedding size (embedding models).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str | None = Field(None, description="The served reranker's name.")
    components: dict[str, str] = Field(
        default_factory=dict, description="Every configured component and its state."
    )


class ErrorBody(BaseModel):
    type: str
    message: str
    code: int
    limit: str | None = None
    limit_value: int | None = None
    value: int | None = None


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorBody
    detail: str = Field(description="The message again (what Jina-style clients read).")


# ---- retrieval ------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(_Lenient):
    """Body of ``/v1/embeddings`` (OpenAI; ``input_type`` and ``instruction`` are finerank's)."""

    input: str | list[str] = Field(..., description="A text or a list of texts.")
    model: str | None = None
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["document", "query"] = "document"
    instruction: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _text_not_tokens(cls, value: object) -> object:
        # langchain-openai sends token ids unless check_embedding_ctx_length=False
        if (
            isinstance(value, list)
            and value
            and all(
                isinstance(v, int) or (isinstance(v, list) and all(isinstance(t, int) for t in v))
                for v in value
            )
        ):
            raise ValueError(
                "input holds token ids; send text instead (with langchain-openai: "
                "OpenAIEmbeddings(check_embedding_ctx_length=False))"
            )
        return value


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(..., description="Floats, or base64 little-endian f32.")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class SearchRequest(_Strict):
    """Body of ``/v1/search``; ``recall_k``, ``rerank_k`` and the query length are bounded by
    the server's ``max_recall_k``, ``max_rerank_k`` and ``max_query_chars`` (413)."""

    collection: str
    query: str = Field(..., min_length=1)
    mode: Literal["bm25", "dense", "hybrid", "bm25+prf", "hybrid+prf"] = "hybrid"
    recall_k: int | None = Field(
        None, ge=1, description="First-stage candidates (default: 100, at most max_recall_k)."
    )
    rerank_k: int | None = Field(None, ge=1, description="Candidates reranked (default: all).")
    top_n: int = Field(10, ge=1, le=10_000)
    filters: dict[str, str | int | list[str | int]] | None = None
    instruction: str | None = None
    rerank: bool = True


class SearchHitOut(BaseModel):
    chunk_id: str
    text: str
    context: str
    source: str
    start: int
    end: int
    metadata: dict[str, Any]
    first_stage_rank: int
    first_stage_score: float
    rerank_rank: int | None = None
    rerank_score: float | None = None


class SearchResponseOut(BaseModel):
    query: str
    collection: str
    mode: str
    candidates: int
    reranked: int
    timings_ms: dict[str, float]
    hits: list[SearchHitOut]


class IngestDocument(_Strict):
    text: str
    id: str | None = Field(None, min_length=1, max_length=512)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(_Strict):
    """Body of ``POST /v1/collections/{name}/documents``."""

    documents: list[IngestDocument | str] = Field(..., min_length=1)
    chunker: Literal["legal", "markdown", "window"] = "window"
    chunker_options: dict[str, Any] = Field(default_factory=dict)


class IngestResponse(BaseModel):
    collection: str
    documents: int
    chunks: int
    added: int
    deleted: int
    unchanged_documents: int
    seconds: float


class CollectionOut(BaseModel):
    name: str
    points: int
    embedding_model: str | None
    dimension: int | None
    chunker: dict[str, Any]


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class Deleted(BaseModel):
    deleted: str
