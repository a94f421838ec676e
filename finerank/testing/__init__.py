"""Build small random-weight models for tests, demos and benchmarks (no downloads).

Model weights cannot always be fetched, so finerank builds them: the real Qwen3 tokenizer
(shipped with finerank as package data, Apache-2.0) next to a tiny random Qwen3 decoder, or the
full-size Qwen3-Reranker-0.6B architecture with random weights (same compute as the real
model). Scores of such models are meaningless; the arithmetic, speed and API are the real
thing. ``finerank make-test-model DIR`` is the command-line form.

Example:
    >>> from finerank.testing import build_qwen3_reranker
    >>> build_qwen3_reranker("./tiny-qwen3-example").name
    'tiny-qwen3-example'
"""

from finerank.testing.models import (
    build_bert_cross_encoder,
    build_qwen3_embedding,
    build_qwen3_reranker,
    minilm_dir,
    qwen3_tokenizer_dir,
    test_model_info,
    write_tokenizer,
)

__all__ = [
    "build_bert_cross_encoder",
    "build_qwen3_embedding",
    "build_qwen3_reranker",
    "minilm_dir",
    "qwen3_tokenizer_dir",
    "test_model_info",
    "write_tokenizer",
]
