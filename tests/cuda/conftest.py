"""CUDA fixtures: the tiny random Qwen3 reranker on the GPU in each precision.

Every test here is marked ``cuda`` and skipped without a CUDA device (CI has none); the GPU
proof kit (``benchmarks/gpu_check.sh``) runs them on one.
"""

from __future__ import annotations

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
#: what each test module sets as ``pytestmark``
MARKS = [pytest.mark.cuda, CUDA]


@pytest.fixture(scope="session")
def cuda_rerankers(qwen3_reranker_dir):
    """``{dtype: Reranker}`` on ``cuda`` for float32, bfloat16 and float16 (loaded once)."""
    from finerank import Reranker

    return {
        dtype: Reranker.from_pretrained(qwen3_reranker_dir, device="cuda", dtype=dtype)
        for dtype in ("float32", "bfloat16", "float16")
    }
