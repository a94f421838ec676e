"""Chunk mode: windows cover the document with overlap, the best window's span comes back."""

from __future__ import annotations

import pytest

from finerank import Reranker
from tests.engine.conftest import QUERY, sentences

TOL = 1e-5


@pytest.fixture(scope="module")
def short_context(qwen3_reranker_dir):
    # a small max_length gives windows of ~70 tokens, so a modest document has several
    return Reranker.from_pretrained(qwen3_reranker_dir, device="cpu", max_length=160)


def test_windows_cover_the_document_with_overlap(short_context):
    doc = sentences(40)
    prepared = short_context.engine.prepare(QUERY, [doc], long_document="chunk")
    spans = prepared.spans
    assert len(spans) >= 4
    assert spans[0][0] == 0 and spans[-1][1] == len(doc)
    window = short_context.backend.document_budget(QUERY, None)
    overlap = round(window * 0.125)
    tokenizer = short_context.backend.tokenizer
    for (start, end), (next_start, next_end) in zip(spans, spans[1:], strict=False):
        assert start < next_start < end < next_end  # consecutive windows overlap
        shared = len(tokenizer(doc[next_start:end], add_special_tokens=False)["input_ids"])
        assert abs(shared - overlap) <= 2
    for start, end in spans:
        assert len(tokenizer(doc[start:end], add_special_tokens=False)["input_ids"]) <= window + 2


def test_span_is_the_best_window_and_window_scores_are_standalone_scores(short_context):
    docs = [sentences(40), "一个很短的文档。", sentences(25, 100)]
    engine = short_context.engine
    prepared = engine.prepare(QUERY, docs, long_document="chunk")
    logits = engine.run(prepared.items)
    results = short_context.rerank(QUERY, docs, long_document="chunk")
    by_index = {r.index: r for r in results}
    for index, doc in enumerate(docs):
        windows = [
            (span, logit)
            for owner, span, logit in zip(prepared.owners, prepared.spans, logits, strict=True)
            if owner == index
        ]
        # each window scores exactly like its text scored on its own (truncate mode, no cut)
        standalone = [short_context.rerank(QUERY, [doc[s:e]])[0].logit for (s, e), _ in windows]
        assert (
            max(abs(a - b) for a, b in zip(standalone, [w[1] for w in windows], strict=True)) <= TOL
        )
        best = max(range(len(windows)), key=lambda i: standalone[i])
        assert by_index[index].span == windows[best][0]
        assert abs(by_index[index].logit - standalone[best]) <= TOL
    assert by_index[1].span == (0, len(docs[1]))
    # the long documents' windows do not all score the same, so "best" is a real choice
    first = [logit for owner, logit in zip(prepared.owners, logits, strict=True) if owner == 0]
    assert max(first) - min(first) > 1e-3


def test_truncate_mode_has_no_span(short_context):
    result = short_context.rerank(QUERY, [sentences(40)])[0]
    assert result.span is None
