"""The variable-length flash-attention path on a real GPU: same answer as SDPA, and the
first-use self-check keeps it on (a silent fallback to SDPA would cost the GPU's speed)."""

from __future__ import annotations

import pytest
import torch

from finerank.models.qwen3 import PackedDecoder, relative_difference
from tests.cuda.conftest import MARKS
from tests.engine.conftest import INSTRUCTION, QUERY, sentences

pytestmark = MARKS

DOCS = ["", "短", sentences(1), sentences(40), sentences(3, 5), sentences(12, 1), sentences(90)]


def _packs(reranker):
    engine = reranker.engine
    items = engine.prepare(QUERY, DOCS, instruction=INSTRUCTION).items
    items += engine.prepare("other query", DOCS[:4]).items
    items += engine.prepare("standalone", [sentences(300)]).items  # a long tail: standalone
    return engine.plan(items)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_varlen_kernel_matches_sdpa(cuda_rerankers, dtype):
    reranker = cuda_rerankers[dtype]
    model = reranker.backend.decoder_model
    varlen = PackedDecoder(model, attention="varlen")
    sdpa = PackedDecoder(model, attention="sdpa")
    assert varlen._varlen is not None, "torch.nn.attention.varlen is missing in this PyTorch"
    for pack in _packs(reranker):
        fast = varlen.last_hidden(pack)
        exact = sdpa.last_hidden(pack)
        assert torch.isfinite(fast).all()
        difference = relative_difference(fast, exact)
        assert difference <= PackedDecoder.VARLEN_CHECK_TOLERANCE, difference


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_auto_attention_keeps_the_varlen_kernel(cuda_rerankers, dtype):
    reranker = cuda_rerankers[dtype]
    reranker.rerank(QUERY, DOCS, instruction=INSTRUCTION)  # first use: the self-check runs
    decoder = reranker.backend.decoder
    assert decoder._varlen_checked
    assert decoder._varlen is not None, (
        f"SDPA fallback after the self-check: {decoder.varlen_check}"
    )
