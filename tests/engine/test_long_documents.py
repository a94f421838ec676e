"""Very long inputs: a 32K-token document scores exactly with linear memory; big requests
run in token-budget slices."""

from __future__ import annotations

import math

import pytest
import torch

from finerank import Reranker
from finerank.bench.measure import PeakMemory
from tests.engine.conftest import QUERY, sentences

LONG = 32768


@pytest.fixture(scope="module")
def doc_32k(qwen3_reranker) -> str:
    tokenizer = qwen3_reranker.backend.tokenizer
    text = sentences(2600)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    assert len(offsets) > LONG
    return text[: offsets[LONG - 1][1]]


def test_32k_token_document_scores_exactly_with_linear_memory(qwen3_reranker_dir, doc_32k):
    reranker = Reranker.from_pretrained(qwen3_reranker_dir, device="cpu", max_length=LONG + 200)
    items = reranker.engine.prepare(QUERY, [doc_32k]).items
    assert len(items[0].ids) >= LONG  # nothing was cut
    with PeakMemory(torch.device("cpu")) as mem:
        result = reranker.rerank(QUERY, [doc_32k])[0]
    # a dense attention matrix for one layer would be 4 heads x 32K x 32K x 4 bytes = 16 GiB
    assert mem.delta_mb < 1500, mem.delta_mb

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(qwen3_reranker_dir), dtype=torch.float32)
    with torch.inference_mode():
        logits = model(torch.tensor([items[0].ids]), logits_to_keep=1).logits[0, -1]
    backend = reranker.backend
    margin = (logits[backend.yes_id] - logits[backend.no_id]).item()
    assert abs(result.logit - margin) <= 1e-4
    assert math.isfinite(result.score)


def test_32k_document_in_chunk_mode(qwen3_reranker, doc_32k):
    result = qwen3_reranker.rerank(QUERY, [doc_32k], long_document="chunk")[0]
    prepared = qwen3_reranker.engine.prepare(QUERY, [doc_32k], long_document="chunk")
    assert len(prepared.items) >= 4  # 32K tokens in windows of < 8K
    assert result.span in prepared.spans


@pytest.mark.slow
def test_100_documents_of_8k_tokens_run_in_bounded_memory(qwen3_reranker, doc_32k):
    tokenizer = qwen3_reranker.backend.tokenizer
    offsets = tokenizer(doc_32k, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    docs = [doc_32k[offsets[i * 200][0] : offsets[i * 200 + 8191][1]] for i in range(100)]
    with PeakMemory(torch.device("cpu")) as mem:
        results = qwen3_reranker.rerank(QUERY, docs)
    assert sorted(r.index for r in results) == list(range(100))
    assert all(math.isfinite(r.logit) for r in results)
    assert mem.delta_mb < 2000, mem.delta_mb
