"""Session-scoped model fixtures, built once per test run (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def qwen3_reranker_dir(tmp_path_factory) -> Path:
    """Tiny random Qwen3 reranker (tied output layer) with the real Qwen3 tokenizer."""
    from finerank.testing import build_qwen3_reranker

    return build_qwen3_reranker(tmp_path_factory.mktemp("qwen3-reranker-tied"))


@pytest.fixture(scope="session")
def qwen3_reranker_untied_dir(tmp_path_factory) -> Path:
    from finerank.testing import build_qwen3_reranker

    return build_qwen3_reranker(
        tmp_path_factory.mktemp("qwen3-reranker-untied"), tie_word_embeddings=False, seed=7
    )


@pytest.fixture(scope="session")
def bert_cross_encoder_dir(tmp_path_factory) -> Path:
    from finerank.testing import build_bert_cross_encoder

    return build_bert_cross_encoder(tmp_path_factory.mktemp("bert-cross-encoder"))


@pytest.fixture(scope="session")
def qwen3_embedding_dir(tmp_path_factory) -> Path:
    from finerank.testing import build_qwen3_embedding

    return build_qwen3_embedding(tmp_path_factory.mktemp("qwen3-embedding"))


@pytest.fixture(scope="session")
def minilm_model_dir() -> Path:
    from finerank.testing import minilm_dir

    return minilm_dir()


@pytest.fixture(scope="session")
def qwen3_reranker(qwen3_reranker_dir):
    """The tiny Qwen3 reranker loaded once, fp32 on CPU."""
    from finerank import Reranker

    return Reranker.from_pretrained(qwen3_reranker_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def bert_reranker(bert_cross_encoder_dir):
    from finerank import Reranker

    return Reranker.from_pretrained(bert_cross_encoder_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` when present (laws, Cranfield); tests that need it skip otherwise."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
