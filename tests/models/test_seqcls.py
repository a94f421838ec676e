"""Seq-cls cross-encoders score like a direct AutoModelForSequenceClassification call."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

PAIRS = [
    ("what is the capital of china?", "Beijing is the capital of China."),
    ("what is the capital of china?", "Bananas are yellow."),
    ("how to fine a network operator", "第六十三条 处五万元以上五十万元以下罚款"),
    ("empty document", ""),
    ("long", "word " * 2000),  # cut to the model's 512 positions
    ("special [SEP] tokens", "text with [CLS] and [SEP] inside"),
]


@pytest.fixture(scope="module")
def direct(bert_cross_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(bert_cross_encoder_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(bert_cross_encoder_dir)).eval()

    def logits(pairs):
        batch = tokenizer(
            [q for q, _ in pairs],
            [d for _, d in pairs],
            padding=True,
            truncation="only_second",
            max_length=512,
            return_tensors="pt",
        )
        with torch.no_grad():
            return model(**batch).logits[:, 0].tolist()

    return logits


def test_seqcls_logits_match_direct_call(bert_reranker, direct):
    expected = direct(PAIRS)
    got = bert_reranker.score_pairs(PAIRS)
    assert max(abs(e - g.logit) for e, g in zip(expected, got, strict=True)) <= 1e-5
    for e, g in zip(expected, got, strict=True):
        assert g.score == pytest.approx(1 / (1 + math.exp(-e)), abs=1e-6)
    assert max(expected) - min(expected) > 0.01  # not a constant model


def test_seqcls_rerank_orders_by_logit(bert_reranker, direct):
    query = PAIRS[0][0]
    docs = [d for _, d in PAIRS]
    expected = direct([(query, d) for d in docs])
    results = bert_reranker.rerank(query, docs, return_documents=True)
    assert [r.index for r in results] == sorted(range(len(docs)), key=lambda i: (-expected[i], i))
    assert all(r.document == docs[r.index] for r in results)
    assert bert_reranker.family == "seq-cls"


def test_seqcls_batch_invariance(bert_reranker):
    alone = [bert_reranker.score([pair])[0] for pair in PAIRS]
    together = bert_reranker.score(PAIRS)
    reversed_ = bert_reranker.score(PAIRS[::-1])[::-1]
    assert max(abs(a - b) for a, b in zip(alone, together, strict=True)) <= 1e-5
    assert max(abs(a - b) for a, b in zip(alone, reversed_, strict=True)) <= 1e-5
