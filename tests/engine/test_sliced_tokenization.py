"""Tokenizing a long document a slice at a time gives exactly the offsets of tokenizing it at
once, so ``prepare_steps`` (bounded steps, stoppable) prepares exactly what ``prepare`` does."""

from __future__ import annotations

import random

import pytest

from finerank.engine.chunking import safe_prefix, token_offsets
from finerank.errors import InvalidInputError
from tests.engine.conftest import QUERY, sentences
from tests.engine.test_tokenization import ATOMS


class LongestText:
    """The real tokenizer; records the longest text it was handed."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.longest = 0

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, text, *args, **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        self.longest = max(self.longest, *(len(t) for t in texts))
        return self._tokenizer(text, *args, **kwargs)


def _full(tokenizer, text):
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(pair) for pair in encoded["offset_mapping"]]


@pytest.mark.parametrize("model", ["qwen3_reranker", "bert_reranker"])
def test_sliced_offsets_are_exact_on_adversarial_text(request, model):
    tokenizer = request.getfixturevalue(model).backend.tokenizer
    rng = random.Random(11)
    sliced_somewhere = 0
    for _ in range(150):
        text = "".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 1200)))
        size = rng.choice([1, 5, 16, 60, 250, 1000])
        parts = list(token_offsets(tokenizer, text, slice_chars=size))
        sliced_somewhere += len(parts) > 1
        assert [pair for part in parts for pair in part] == _full(tokenizer, text)
    assert sliced_somewhere > 100  # the slicing itself was exercised


def test_sliced_offsets_are_exact_on_law_text(qwen3_reranker, shared_data):
    tokenizer = qwen3_reranker.backend.tokenizer
    text = "\n".join(
        path.read_text(encoding="utf-8") for path in sorted((shared_data / "laws").glob("*.md"))
    )
    parts = list(token_offsets(tokenizer, text, slice_chars=2048))
    assert len(parts) > 5
    assert [pair for part in parts for pair in part] == _full(tokenizer, text)


@pytest.mark.parametrize("model", ["qwen3_reranker", "bert_reranker"])
def test_prepare_in_steps_is_prepare(request, model, mixed_docs):
    engine = request.getfixturevalue(model).engine
    docs = [*mixed_docs, sentences(300), "中文" * 3000]
    for mode in ("truncate", "chunk"):
        whole = engine.prepare(QUERY, docs, long_document=mode)
        steps = engine.prepare_steps(QUERY, docs, long_document=mode, step_chars=500)
        bounds = []
        while True:
            try:
                bounds.append(next(steps))
            except StopIteration as done:
                stepped = done.value
                break
        assert len(bounds) >= 3
        assert bounds == sorted(bounds) and bounds[-1] <= whole.num_tokens  # lower bounds
        assert stepped.items == whole.items and stepped.spans == whole.spans
        assert stepped.owners == whole.owners


def test_a_huge_document_is_never_tokenized_whole(bert_reranker, qwen3_reranker):
    huge = "第六十三条 违反本法规定，从事危害网络安全的活动。" * 40000  # 1M characters
    for reranker in (bert_reranker, qwen3_reranker):
        backend = reranker.backend
        counting = LongestText(backend.tokenizer)
        prefix = safe_prefix(counting, huge, backend.max_length)
        assert len(prefix) < len(huge) and counting.longest <= 2 * 32_768
        assert (
            _full(backend.tokenizer, prefix)[: backend.max_length]
            == (_full(backend.tokenizer, huge[: len(prefix) + 5000])[: backend.max_length])
        )
    # seq-cls truncation keeps the same ids as tokenizing all of it
    got = bert_reranker.backend.encode("q", [huge], None)[0].ids
    full = bert_reranker.backend.tokenizer(
        "q", huge, truncation="only_second", max_length=bert_reranker.backend.max_length
    )["input_ids"]
    assert list(got) == full


def test_a_query_with_no_room_for_a_document_is_bad_input(bert_reranker):
    with pytest.raises(InvalidInputError, match="query is too long"):
        bert_reranker.rerank("word " * 2000, ["doc"])
