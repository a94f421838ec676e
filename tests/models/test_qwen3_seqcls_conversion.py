"""A Qwen3 seq-cls conversion (one logit = l_yes - l_no) scores like the yes/no original."""

from __future__ import annotations

import pytest

from finerank import Reranker


@pytest.fixture(scope="module")
def converted_dir(qwen3_reranker_dir, tmp_path_factory):
    # the conversion the peers benchmark feeds Infinity (and any seq-cls-only server)
    from finerank.bench.contenders import seq_cls_conversion

    return seq_cls_conversion(qwen3_reranker_dir, tmp_path_factory.mktemp("qwen3-seq-cls"))


def test_conversion_matches_yes_no_reranker(converted_dir, qwen3_reranker):
    converted = Reranker.from_pretrained(converted_dir, device="cpu")
    assert converted.family == "seq-cls"
    pairs = [
        ("罚款多少", "第六十三条 处五万元以上五十万元以下罚款"),
        ("q", ""),
        ("capital", "Beijing is the capital of China. " * 20),
    ]
    instruction = "Judge legal relevance"
    expected = qwen3_reranker.score_pairs(pairs, instruction=instruction)
    got = converted.score_pairs(pairs, instruction=instruction)
    for e, g in zip(expected, got, strict=True):
        assert g.logit == pytest.approx(e.logit, abs=1e-4)
        assert g.score == pytest.approx(e.score, abs=1e-5)
