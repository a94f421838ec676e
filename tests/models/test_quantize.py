"""int8 dynamic quantization: linear layers become int8, scores stay close, bad requests fail
clearly."""

from __future__ import annotations

import pytest
import torch

from finerank import Reranker
from finerank.errors import ModelLoadError
from finerank.models.quantize import quantize_backend


def test_int8_scores_stay_close_to_fp32(qwen3_reranker_dir, qwen3_reranker):
    quantized = Reranker.from_pretrained(qwen3_reranker_dir, device="cpu", quantize="int8")
    layer = quantized.backend.decoder_model.layers[0].mlp.up_proj
    assert "quantized" in type(layer).__module__
    assert quantized.backend.head.dtype == torch.float32  # the yes/no head stays fp32
    docs = [f"document {i} about " + "network security " * (i % 7) for i in range(12)]
    exact = qwen3_reranker.score([("query", d) for d in docs])
    approx = quantized.score([("query", d) for d in docs])
    diffs = [abs(a - b) for a, b in zip(exact, approx, strict=True)]
    assert 0 < max(diffs) < 0.1  # changed (really quantized), but only slightly


def test_int8_refuses_what_it_cannot_do(qwen3_reranker_dir):
    with pytest.raises(ModelLoadError, match="float32"):
        Reranker.from_pretrained(
            qwen3_reranker_dir, device="cpu", dtype="bfloat16", quantize="int8"
        )
    with pytest.raises(ModelLoadError, match="unknown quantization"):
        quantize_backend(object(), "int4")
