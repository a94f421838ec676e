"""Bounded tokenization gives exactly the ids of full tokenization; sliced requests with
background tokenization give exactly the unsliced results."""

from __future__ import annotations

import random

import pytest

from finerank.engine.engine import _slices
from finerank.errors import InvalidInputError
from finerank.models.qwen3 import encode_truncated
from tests.engine.conftest import QUERY, sentences

ATOMS = [
    "a",
    "The",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "中",
    "文字",
    "🚀",
    "é",
    "e\u0301",
    "\u0301",
    "1",
    "23",
    "<|im_end|>",
    "<|im_start|>",
    "<think>",
    "</think>",
    ".",
    "!!",
    "'s",
    "x" * 50,
    " " * 30,
    "=",
    "==",
    "<|endoftext|>",
    "ab" * 40,
    "Ω",
    "\r\n",
]


class CountingTokenizer:
    """Records the longest text handed to the tokenizer."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.longest = 0

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, texts, **kwargs):
        self.longest = max(self.longest, *(len(t) for t in texts))
        return self._tokenizer(texts, **kwargs)


def test_bounded_tokenization_is_exact_on_adversarial_text(qwen3_reranker):
    tokenizer = qwen3_reranker.backend.tokenizer
    rng = random.Random(0)
    texts, budgets = [], []
    for _ in range(80):
        texts.append("".join(rng.choice(ATOMS) for _ in range(rng.randint(20, 2500))))
        budgets.append(rng.randint(1, 300))
    for text, budget in zip(texts, budgets, strict=True):
        assert (
            encode_truncated(tokenizer, [text], budget)[0] == tokenizer(text)["input_ids"][:budget]
        )


def test_huge_text_is_not_tokenized_in_full(qwen3_reranker):
    tokenizer = CountingTokenizer(qwen3_reranker.backend.tokenizer)
    huge = "第六十三条 违反本法规定，从事危害网络安全的活动。" * 20000  # 500K chars
    short = "short document"
    got = encode_truncated(tokenizer, [huge, short], 1000)
    assert tokenizer.longest < 20000
    full = qwen3_reranker.backend.tokenizer([huge, short])["input_ids"]
    assert got == [full[0][:1000], full[1]]


def test_sliced_request_equals_one_request(qwen3_reranker, mixed_docs):
    docs = mixed_docs * 3
    assert len(_slices(docs, 200)) > 3
    whole = qwen3_reranker.engine.score_request(QUERY, docs)
    sliced = qwen3_reranker.engine.score_request(QUERY, docs, slice_chars=200)
    assert [r.index for r in sliced] == list(range(len(docs)))
    assert max(abs(a.logit - b.logit) for a, b in zip(whole, sliced, strict=True)) <= 1e-5
    chunked = qwen3_reranker.engine.score_request(
        QUERY, docs, slice_chars=200, long_document="chunk"
    )
    assert [r.span for r in chunked][3] == (0, len(docs[3]))


def test_sliced_request_reports_bad_input(qwen3_reranker):
    with pytest.raises(InvalidInputError, match=r"documents\[1\]"):
        qwen3_reranker.engine.score_request(QUERY, ["a", 3], slice_chars=1)
    with pytest.raises(ValueError, match="long_document"):
        qwen3_reranker.engine.score_request(
            QUERY, [sentences(3)] * 4, slice_chars=1, long_document="split"
        )


@pytest.mark.parametrize(
    "sizes,expected", [([], [(0, 0)]), ([5, 5, 5], [(0, 2), (2, 3)]), ([20], [(0, 1)])]
)
def test_slices(sizes, expected):
    assert _slices(["x" * n for n in sizes], 10) == expected
