"""The scoring engine: validate, tokenize, window long documents, pack, run, collect.

The engine is synchronous and thread-confined: one forward pass at a time. The HTTP service
merges work from many requests by calling :meth:`ScoringEngine.prepare` per request and
:meth:`ScoringEngine.run` on the union of their items.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import torch

from finerank.engine.packing import plan_packs
from finerank.errors import InvalidInputError
from finerank.models.base import Backend, EncodedPair, Pack
from finerank.models.fused import WARM_UP_TEXTS, timed_warm_up

#: what :meth:`ScoringEngine.warm_up` scores: this query with each of ``WARM_UP_TEXTS``
WARM_UP_QUERY = "warm-up query"

LongDocumentMode = Literal["truncate", "chunk"]

# Characters of text tokenized per step of ScoringEngine.prepare_steps (~0.1 s on one core).
STEP_CHARS = 32_768
# More tokens than any template (system prompt, instruction and query markers, special
# tokens) adds to a pair, and fewer than the smallest window a chunked document gets.
_TEMPLATE_TOKENS = 64
_MIN_WINDOW_TOKENS = 32

# Requests with more document text than this (characters) are scored in slices, the next
# slice being tokenized on a background thread while the current one runs on the model.
# Tokenizers and torch both release the GIL, so the two overlap.
OVERLAP_SLICE_CHARS = 400_000


@dataclass(frozen=True)
class ScoreResult:
    """The score of one document.

    ``score`` is a probability in [0, 1] (sigmoid of ``logit``). For Qwen3 ``logit`` is the
    margin logit("yes") - logit("no"); for seq-cls models it is the raw class logit. ``span``
    is the (start, end) character range of the window that scored best in ``chunk`` mode.
    """

    index: int
    score: float
    logit: float
    span: tuple[int, int] | None = None
    document: str | None = None


@dataclass
class PreparedRequest:
    """Scorable items for one (query, documents) request, ready to merge with others."""

    documents: list[str]
    items: list[EncodedPair]
    owners: list[int]  # document index of each item
    spans: list[tuple[int, int] | None]
    chunked: bool = False
    num_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_tokens = sum(len(item.ids) for item in self.items)

    def collect(
        self, logits: Sequence[float], *, return_documents: bool = False
    ) -> list[ScoreResult]:
        """Per-document results in input order; a chunked document keeps its best window."""
        best: dict[int, tuple[float, tuple[int, int] | None]] = {}
        for owner, logit, span in zip(self.owners, logits, self.spans, strict=True):
            if owner not in best or logit > best[owner][0]:
                best[owner] = (logit, span)
        results = []
        for index, document in enumerate(self.documents):
            logit, span = best[index]
            results.append(
                ScoreResult(
                    index=index,
                    score=sigmoid(logit),
                    logit=logit,
                    span=span if self.chunked else None,
                    document=document if return_documents else None,
                )
            )
        return results


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def rank_results(results: list[ScoreResult], top_n: int | None) -> list[ScoreResult]:
    """Sort by score (desc), ties by original index; keep the first ``top_n``."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInputError(f"top_n must be a positive integer, got {top_n!r}")
    ranked = sorted(results, key=lambda r: (-r.logit, r.index))
    return ranked[:top_n] if top_n is not None else ranked


def validate_documents(documents: object) -> list[str]:
    """Check that ``documents`` is a list of strings; say which index is wrong otherwise."""
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InvalidInputError(
            f"documents must be a list of strings, got {type(documents).__name__}"
        )
    for index, document in enumerate(documents):
        if not isinstance(document, str):
            raise InvalidInputError(
                f"documents[{index}] must be a string, got {type(document).__name__}"
            )
    return list(documents)


class ScoringEngine:
    """Turns requests into packed forward passes on one backend.

    Example:
        >>> engine = ScoringEngine(backend, max_batch_tokens=8192)  # doctest: +SKIP
        >>> prepared = engine.prepare("query", ["doc a", "doc b"])  # doctest: +SKIP
        >>> prepared.collect(engine.run(prepared.items))  # doctest: +SKIP
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_batch_tokens: int = 16384,
        share_prefix: bool = True,
        chunk_overlap: float = 0.125,
    ):
        if max_batch_tokens < 1:
            raise InvalidInputError("max_batch_tokens must be positive")
        self.backend = backend
        self.max_batch_tokens = max_batch_tokens
        self.share_prefix = share_prefix and backend.supports_prefix_sharing
        self.chunk_overlap = chunk_overlap

    # ---- preparation ---------------------------------------------------------------------
    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        long_document: LongDocumentMode = "truncate",
        max_tokens_per_doc: int | None = None,
    ) -> PreparedRequest:
        """Validate and tokenize one request (no model call)."""
        steps = self.prepare_steps(
            query,
            documents,
            instruction=instruction,
            long_document=long_document,
            max_tokens_per_doc=max_tokens_per_doc,
        )
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def prepare_steps(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        long_document: LongDocumentMode = "truncate",
        max_tokens_per_doc: int | None = None,
        step_chars: int = STEP_CHARS,
    ) -> Generator[int, None, PreparedRequest]:
        """:meth:`prepare` in bounded steps, for callers that serve others in between.

        Each ``next()`` tokenizes about ``step_chars`` characters and yields a lower bound of
        the request's final token count (exact so far in ``truncate`` mode; the document
        tokens read so far in ``chunk`` mode, every one of which lands in some window). A
        caller over its token limit stops there: a huge ``chunk`` request costs what the limit
        allows, not what was sent. The return value is :meth:`prepare`'s, to the token.

        Example:
            >>> steps = engine.prepare_steps("q", [huge], long_document="chunk")  # doctest: +SKIP
            >>> next(steps)  # tokens read so far  # doctest: +SKIP
            16384
        """
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInputError(
                f"instruction must be a string, got {type(instruction).__name__}"
            )
        docs = validate_documents(documents)
        if long_document not in ("truncate", "chunk"):
            raise InvalidInputError(
                f"long_document must be 'truncate' or 'chunk', got {long_document!r}"
            )
        if max_tokens_per_doc is not None and max_tokens_per_doc < 1:
            raise InvalidInputError(f"max_tokens_per_doc must be >= 1, got {max_tokens_per_doc}")
        if not docs:
            return PreparedRequest([], [], [], [], chunked=long_document == "chunk")
        if long_document == "truncate":
            items: list[EncodedPair] = []
            tokens = 0
            # A truncated pair reads at most about this many characters of its text.
            read = 8 * self.backend.max_length + len(query) + len(instruction or "")
            for group in _groups(docs, step_chars, weight=lambda doc: min(len(doc), read)):
                encoded = self.backend.encode(query, group, instruction, max_tokens_per_doc)
                items.extend(encoded)
                tokens += sum(len(item.ids) for item in encoded)
                yield tokens
            return PreparedRequest(docs, items, list(range(len(docs))), [None] * len(docs))
        return (
            yield from self._prepare_chunked(
                query, docs, instruction, max_tokens_per_doc, step_chars
            )
        )

    def _prepare_chunked(
        self,
        query: str,
        docs: list[str],
        instruction: str | None,
        max_tokens_per_doc: int | None,
        step_chars: int,
    ) -> Generator[int, None, PreparedRequest]:
        from finerank.engine.chunking import token_offsets, window_spans

        window = self.backend.document_budget(query, instruction)
        if max_tokens_per_doc is not None:
            window = min(window, max_tokens_per_doc)
        texts: list[str] = []
        owners: list[int] = []
        spans: list[tuple[int, int] | None] = []
        read, unreported = 0, 0
        for index, doc in enumerate(docs):
            offsets: list[tuple[int, int]] = []
            for part in token_offsets(self.backend.tokenizer, doc, slice_chars=step_chars):
                offsets.extend(part)
                read += len(part)
                unreported += (part[-1][1] - part[0][0]) if part else 0
                if unreported >= step_chars:
                    unreported = 0
                    yield read
            for start, end in window_spans(
                offsets, len(doc), window_tokens=window, overlap=self.chunk_overlap
            ):
                texts.append(doc[start:end])
                owners.append(index)
                spans.append((start, end))
        yield read
        items: list[EncodedPair] = []
        tokens = 0
        for group in _groups(texts, step_chars, weight=len):
            encoded = self.backend.encode(query, group, instruction, None)
            items.extend(encoded)
            tokens += sum(len(item.ids) for item in encoded)
            yield max(read, tokens)
        return PreparedRequest(docs, items, owners, spans, chunked=True)

    def token_upper_bound(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        long_document: LongDocumentMode = "truncate",
    ) -> float:
        """A bound on :meth:`prepare`'s token count from the text's size alone (no
        tokenizing): a token covers at least one UTF-8 byte, a pair is at most
        ``max_length`` tokens. ``inf`` for ``chunk`` documents longer than the smallest
        window, whose number of windows only tokenizing can tell.
        """
        overhead = _TEMPLATE_TOKENS + _utf8_bytes(query) + _utf8_bytes(instruction or "")
        bound = 0.0
        for document in documents:
            if not isinstance(document, str):
                return math.inf
            size = _utf8_bytes(document)
            if long_document == "chunk" and size > _MIN_WINDOW_TOKENS:
                return math.inf
            bound += min(self.backend.max_length, overhead + size)
        return bound

    # ---- execution -----------------------------------------------------------------------
    def warm_up(self) -> float | None:
        """Score two pairs of a few tokens when the backend's next forward would compile
        kernels (its ``warm_up_due``; compiled CPU kernels, see :mod:`finerank.models.fused`),
        so that a server pays for compiling, and the compiled kernels' first-use check, at
        start instead of on a user's first request.

        Returns:
            The seconds it took, or None when nothing was due (no forward run).

        Example:
            >>> engine.warm_up()  # doctest: +SKIP
            21.4
        """
        if not getattr(self.backend, "warm_up_due", False):
            return None
        return timed_warm_up(
            lambda: self.run(self.prepare(WARM_UP_QUERY, list(WARM_UP_TEXTS)).items)
        )

    def plan(self, items: Sequence[EncodedPair]) -> list[Pack]:
        return plan_packs(items, self.max_batch_tokens, share_prefix=self.share_prefix)

    def run(self, items: Sequence[EncodedPair]) -> list[float]:
        """Logits for ``items`` in order; the packing never changes a value."""
        logits = [0.0] * len(items)
        for pack in self.plan(items):
            for index, value in zip(pack.item_indices, self._forward(pack), strict=True):
                logits[index] = value
        return logits

    def _forward(self, pack: Pack) -> list[float]:
        try:
            return self.backend.forward(pack).tolist()
        except torch.OutOfMemoryError:
            members = [(group, m) for group in pack.groups for m in group.members]
            if len(members) < 2:
                raise
            if self.backend.device.type == "cuda":
                torch.cuda.empty_cache()
            # Halve and retry: never drop a pair.
            half = len(members) // 2
            return self._forward(_subpack(members[:half])) + self._forward(_subpack(members[half:]))

    def score_request(
        self,
        query: str,
        documents: Sequence[str],
        **kwargs,
    ) -> list[ScoreResult]:
        """prepare + run + collect, in input order.

        Big requests are cut into slices of about ``slice_chars`` characters of documents; the
        next slice is tokenized on a background thread while the current one runs. Scores do
        not depend on the slicing (a pair's score never depends on its batch neighbours).
        """
        return_documents = kwargs.pop("return_documents", False)
        slice_chars = kwargs.pop("slice_chars", OVERLAP_SLICE_CHARS)
        docs = validate_documents(documents)
        slices = _slices(docs, slice_chars)
        if len(slices) <= 1:
            prepared = self.prepare(query, docs, **kwargs)
            return prepared.collect(self.run(prepared.items), return_documents=return_documents)
        results: list[ScoreResult] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finerank-tokenize") as pool:
            future = pool.submit(self.prepare, query, docs[slice(*slices[0])], **kwargs)
            for number, (start, _) in enumerate(slices):
                prepared = future.result()
                if number + 1 < len(slices):
                    future = pool.submit(
                        self.prepare, query, docs[slice(*slices[number + 1])], **kwargs
                    )
                collected = prepared.collect(
                    self.run(prepared.items), return_documents=return_documents
                )
                results.extend(
                    dataclasses.replace(result, index=result.index + start) for result in collected
                )
        return results


def _slices(docs: list[str], slice_chars: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) document ranges of about ``slice_chars`` characters each."""
    slices: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, doc in enumerate(docs):
        size += len(doc)
        if size >= slice_chars:
            slices.append((start, index + 1))
            start, size = index + 1, 0
    if start < len(docs) or not slices:
        slices.append((start, len(docs)))
    return slices


def _groups(texts: list[str], size: int, *, weight) -> Iterator[list[str]]:
    """Consecutive groups of ``texts`` whose ``weight`` adds up to about ``size``."""
    group: list[str] = []
    total = 0
    for text in texts:
        group.append(text)
        total += weight(text)
        if total >= size:
            yield group
            group, total = [], 0
    if group:
        yield group


def _utf8_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _subpack(members) -> Pack:
    from finerank.models.base import PackGroup

    pack = Pack()
    for group, member in members:
        if not pack.groups or pack.groups[-1].prefix is not group.prefix:
            pack.groups.append(PackGroup(group.prefix, []))
        pack.groups[-1].members.append(member)
    return pack
