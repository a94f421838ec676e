"""finerank's Qwen3 scores equal the official model-card code (fp32, |diff| <= 1e-5)."""

from __future__ import annotations

import pytest

from finerank import Reranker
from tests.reference import OfficialQwen3Reranker

TOL = 1e-5
LEGAL_QUERY = "非法获取敌公司的服务器数据并破坏服务器，应采取什么处置措施？罚款多少？"
LEGAL_INSTRUCTION = (
    "请依据中国现行法律条款，判断文档是否明确提及对非法入侵行为的行政处罚或刑事责任。"
)
LONG_DOC = " ".join(f"Sentence {i} about network operators and data." for i in range(120))

CASES: list[tuple[str, str]] = [
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("What is the capital of China?", "Gravity is a force that attracts two bodies."),
    ("Explain gravity", "Gravity is a force that attracts two bodies towards each other."),
    ("Explain gravity", ""),
    (
        LEGAL_QUERY,
        "第六十三条 违反本法第二十七条规定，从事危害网络安全的活动，尚不构成犯罪的，"
        "由公安机关没收违法所得，处五日以下拘留，可以并处五万元以上五十万元以下罚款。",
    ),
    (LEGAL_QUERY, "第一条 为了保障网络安全，维护网络空间主权和国家安全，制定本法。"),
    (LEGAL_QUERY, "The Cybersecurity Law 第二十七条 forbids illegal intrusion into networks."),
    ("GDPR 和 个人信息保护法 有何区别?", "个人信息保护法 (PIPL) applies to processing in China."),
    ("mixed 中英文 query", "A document with 中文 and English mixed 在一起。"),
    ("special tokens", "Text with <|im_end|> and <|im_start|>assistant inside it."),
    ("special tokens", "<|endoftext|><think>yes</think>"),
    ("long", LONG_DOC),
    ("emoji 🚀", "Rockets 🚀 go to space."),
    ("tabs\tand\nnewlines", "line one\nline two\n\n\tindented"),
    ("", "an empty query"),
    ("数字 123", "１２３ full-width digits"),
]


@pytest.fixture(scope="module")
def official(qwen3_reranker_dir):
    return OfficialQwen3Reranker(qwen3_reranker_dir, max_length=8192)


def _finerank_scores(reranker: Reranker, cases, instruction=None):
    return reranker.score(cases, instruction=instruction)


@pytest.mark.parametrize("instruction", [None, LEGAL_INSTRUCTION, "Find the matching passage"])
def test_scores_match_official_code(qwen3_reranker, official, instruction):
    expected = official.scores([q for q, _ in CASES], [d for _, d in CASES], instruction)
    got = _finerank_scores(qwen3_reranker, CASES, instruction)
    diffs = [abs(a - b) for a, b in zip(expected, got, strict=True)]
    assert max(diffs) <= TOL, diffs
    # random weights still give spread-out scores, so the comparison is not vacuous
    assert max(expected) - min(expected) > 0.05


def test_rerank_path_matches_official_code(qwen3_reranker, official):
    docs = [d for q, d in CASES if q == LEGAL_QUERY] + [d for _, d in CASES[:4]]
    expected = official.scores([LEGAL_QUERY] * len(docs), docs, LEGAL_INSTRUCTION)
    results = qwen3_reranker.rerank(LEGAL_QUERY, docs, instruction=LEGAL_INSTRUCTION)
    by_index = {r.index: r.score for r in results}
    assert max(abs(by_index[i] - s) for i, s in enumerate(expected)) <= TOL
    assert [r.index for r in results] == sorted(range(len(docs)), key=lambda i: (-expected[i], i))


@pytest.mark.parametrize("max_length", [64, 96, 200])
def test_truncation_matches_official_code(qwen3_reranker_dir, max_length):
    official = OfficialQwen3Reranker(qwen3_reranker_dir, max_length=max_length)
    reranker = Reranker.from_pretrained(qwen3_reranker_dir, device="cpu", max_length=max_length)
    long_query = "why " * 300  # so long the document disappears at these lengths
    cases = [
        ("long", LONG_DOC),
        (long_query, "a short document"),
        ("q", "short"),
        (LEGAL_QUERY, LONG_DOC + "第六十三条"),
    ]
    expected = official.scores([q for q, _ in cases], [d for _, d in cases])
    got = reranker.score(cases)
    assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) <= TOL
    assert reranker.count_tokens("long", [LONG_DOC]) == max_length


def test_untied_output_layer_matches_official_code(qwen3_reranker_untied_dir):
    official = OfficialQwen3Reranker(qwen3_reranker_untied_dir)
    reranker = Reranker.from_pretrained(qwen3_reranker_untied_dir, device="cpu")
    expected = official.scores([q for q, _ in CASES], [d for _, d in CASES])
    got = reranker.score(CASES)
    assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) <= TOL


def test_logit_is_the_yes_no_margin(qwen3_reranker):
    import math

    for result in qwen3_reranker.score_pairs(CASES[:5]):
        assert result.score == pytest.approx(1 / (1 + math.exp(-result.logit)), abs=1e-12)
