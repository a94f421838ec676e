"""A Qwen3 seq-cls conversion (one logit = l_yes - l_no) scores like the yes/no original."""

from __future__ import annotations

import pytest
import torch

from finerank import Reranker


@pytest.fixture(scope="module")
def converted_dir(qwen3_reranker_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_reranker_dir))
    causal = AutoModelForCausalLM.from_pretrained(str(qwen3_reranker_dir))
    config = causal.config
    config.num_labels = 1
    config.architectures = ["Qwen3ForSequenceClassification"]
    seq_cls = Qwen3ForSequenceClassification(config)
    seq_cls.model.load_state_dict(causal.model.state_dict())
    head = causal.lm_head.weight
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    with torch.no_grad():
        seq_cls.score.weight.copy_((head[yes] - head[no])[None])
    target = tmp_path_factory.mktemp("qwen3-seq-cls")
    seq_cls.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


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
