"""The public Python API: load a reranker, score pairs, rank documents.

Example:
    >>> from finerank import Reranker
    >>> reranker = Reranker.from_pretrained("./tiny-qwen3")  # or "Qwen/Qwen3-Reranker-0.6B"
    >>> docs = ["The capital of China is Beijing.", "Gravity pulls things down."]
    >>> results = reranker.rerank("What is the capital of China?", docs)
    >>> [(r.index, round(r.score, 4)) for r in results]  # a random-weight test model
    [(0, 0.1011), (1, 0.0771)]

    ``./tiny-qwen3`` is the test model of ``finerank make-test-model ./tiny-qwen3``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from finerank.engine.engine import (
    LongDocumentMode,
    ScoreResult,
    ScoringEngine,
    rank_results,
    sigmoid,
)
from finerank.errors import InvalidInputError
from finerank.models.allocator import keep_buffers_in_heap
from finerank.models.fused import CompileMode, check_compile_mode
from finerank.models.loading import pick_device, pick_dtype, quiet_transformers, resolve_model


class Reranker:
    """A loaded reranker (Qwen3 yes/no or a sequence-classification cross-encoder)."""

    def __init__(self, engine: ScoringEngine, *, name: str, path: Path, load_seconds: float):
        self.engine = engine
        self.backend = engine.backend
        self.name = name
        self.path = path
        self.load_seconds = load_seconds

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        max_length: int = 8192,
        family: str | None = None,
        max_batch_tokens: int = 16384,
        share_prefix: bool = True,
        chunk_overlap: float = 0.125,
        quantize: str = "none",
        compile: CompileMode = "auto",
    ) -> Reranker:
        """Load from a local directory or a hub id.

        Args:
            name_or_path: a model directory (config.json, weights, tokenizer) or a hub id.
            device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
            dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16``,
                ``float16``.
            max_length: tokens per pair, template included.
            family: ``qwen3`` or ``seq-cls``; default: detected from config.json.
            max_batch_tokens: token budget of one forward pass.
            share_prefix: compute system prompt + instruction + query once per pack.
            chunk_overlap: window overlap in ``long_document="chunk"`` mode.
            quantize: ``none`` or ``int8`` (dynamic int8 linear layers, CPU + float32).
            compile: whether a Qwen3 model's elementwise kernels compile on CPU
                (``torch.compile``, tens of seconds once, see :mod:`finerank.models.fused`):
                ``auto`` for bf16/fp16 models of hidden size >= 512, ``on`` always, ``off``
                never (a one-shot run, where compiling costs more than it saves).
                ``FINERANK_COMPILE=1`` or ``0`` in the environment overrides it.

        Returns:
            The loaded :class:`Reranker`.

        Example:
            >>> Reranker.from_pretrained("/no/such/dir")
            Traceback (most recent call last):
            ...
            finerank.errors.ModelLoadError: model directory not found: /no/such/dir ...
        """
        started = time.perf_counter()
        check_compile_mode(compile)
        resolved = resolve_model(name_or_path, family)
        torch_device = pick_device(device)
        torch_dtype = pick_dtype(dtype, torch_device)
        if torch_device.type == "cpu":
            keep_buffers_in_heap()
        quiet_transformers()
        options = dict(device=torch_device, dtype=torch_dtype, max_length=max_length)
        if resolved.family == "qwen3":
            from finerank.models.qwen3 import Qwen3RerankerBackend

            backend = Qwen3RerankerBackend(resolved.path, compile=compile, **options)
        else:  # runs the model's own modules: nothing to compile
            from finerank.models.seqcls import SeqClsBackend

            backend = SeqClsBackend(resolved.path, **options)
        if quantize != "none":
            from finerank.models.quantize import quantize_backend

            quantize_backend(backend, quantize)
        engine = ScoringEngine(
            backend,
            max_batch_tokens=max_batch_tokens,
            share_prefix=share_prefix,
            chunk_overlap=chunk_overlap,
        )
        return cls(
            engine,
            name=str(name_or_path),
            path=resolved.path,
            load_seconds=time.perf_counter() - started,
        )

    @property
    def family(self) -> str:
        return self.backend.family

    @property
    def max_length(self) -> int:
        return self.backend.max_length

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
        long_document: LongDocumentMode = "truncate",
        max_tokens_per_doc: int | None = None,
    ) -> list[ScoreResult]:
        """Rank ``documents`` for ``query``: best first, ties by original index.

        ``instruction`` replaces the default Qwen3 instruction (ignored by seq-cls models).
        ``long_document="chunk"`` scores token windows of long documents and keeps the best
        one (its character ``span`` is returned).

        Example:
            >>> reranker = Reranker.from_pretrained("./tiny-qwen3")
            >>> docs = ["Beijing is the capital of China.", "Bananas are yellow."]
            >>> reranker.rerank("capital of China?", docs, top_n=1)  # random weights: noise
            [ScoreResult(index=1, score=0.1052..., logit=-2.1404..., span=None, document=None)]
        """
        if top_n is not None:
            rank_results([], top_n)  # validates before any work
        results = self.engine.score_request(
            query,
            documents,
            instruction=instruction,
            long_document=long_document,
            max_tokens_per_doc=max_tokens_per_doc,
            return_documents=return_documents,
        )
        return rank_results(results, top_n)

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
    ) -> list[float]:
        """Scores (P(yes), or sigmoid of the class logit) of raw (query, document) pairs.

        Example:
            >>> reranker = Reranker.from_pretrained("./tiny-qwen3")
            >>> pairs = [("capital of China?", "Beijing is the capital of China.")]
            >>> [round(score, 4) for score in reranker.score(pairs)]
            [0.0986]
        """
        return [result.score for result in self.score_pairs(pairs, instruction=instruction)]

    def score_pairs(
        self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None
    ) -> list[ScoreResult]:
        """Like :meth:`score` but with logits; one packed run for all pairs."""
        items = []
        for position, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidInputError(f"pairs[{position}] must be a (query, document) pair")
            query, document = pair
            if not isinstance(query, str) or not isinstance(document, str):
                raise InvalidInputError(f"pairs[{position}] must hold two strings")
            items.extend(self.backend.encode(query, [document], instruction))
        logits = self.engine.run(items)
        return [
            ScoreResult(index=i, score=sigmoid(logit), logit=logit)
            for i, logit in enumerate(logits)
        ]

    def count_tokens(
        self, query: str, documents: Sequence[str] = (), *, instruction: str | None = None
    ) -> int:
        """Tokens the model reads for ``query`` against ``documents`` (template included, after
        truncation); with no documents, the tokens of ``query`` alone.

        Example:
            >>> reranker = Reranker.from_pretrained("./tiny-qwen3")
            >>> reranker.count_tokens("hello"), reranker.count_tokens("hello", ["world"])
            (1, 74)
        """
        if not documents:
            return self.backend.count_tokens(query)
        prepared = self.engine.prepare(query, documents, instruction=instruction)
        return prepared.num_tokens
