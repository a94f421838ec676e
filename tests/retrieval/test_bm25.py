"""BM25 through Qdrant (IDF applied server-side) equals Lucene BM25 computed by bm25s."""

from __future__ import annotations

import numpy as np
import pytest

from finerank.retrieval.bm25 import Bm25Encoder, analyze, token_id
from finerank.retrieval.chunkers import Document, get_chunker
from finerank.retrieval.ingest import ingest_documents
from finerank.retrieval.search import SearchService
from finerank.retrieval.store import VectorStore

DOCS = [
    "The cat sat on the mat while another cat slept.",
    "Dogs and cats are popular pets in many homes.",
    "A cat chases a dog; the dog chases the cat back.",
    "网络运营者违反本法规定，处五万元以上五十万元以下罚款。",
    "非法侵入他人网络、干扰他人网络正常功能、窃取网络数据的，由公安机关没收违法所得。",
    "Boundary layer transition on a flat plate at supersonic speed.",
]


def test_analyzer_english_and_chinese():
    assert analyze("The Cats were chasing dogs' tails") == ["cat", "chasing", "dog", "tail"]
    terms = analyze("窃取网络数据的，由公安机关没收")
    # character unigrams and bigrams; no bigram spans a function word (的, 由) or punctuation
    assert terms[:11] == [
        "窃",
        "取",
        "网",
        "络",
        "数",
        "据",
        "窃取",
        "取网",
        "网络",
        "络数",
        "数据",
    ]
    assert {"公安", "机关", "没收", "没"} <= set(terms)
    assert not {"的", "，", "据的", "由公", "据由"} & set(terms)
    assert analyze("ＡＢＣ１２３") == ["abc123"]  # full-width folded (NFKC)
    assert token_id("cat") == token_id("cat") != token_id("cats")


def test_question_words_are_dropped():
    """Particles, pronouns and question words of colloquial questions carry no topic."""
    assert analyze("我的承包地可以被收回吗？") == [
        "承",
        "包",
        "地",
        "承包",
        "包地",
        "收",
        "回",
        "收回",
    ]
    assert analyze("怎么办") == analyze("什么是什么") == []
    # mixed text: English words as in English text, Chinese as in Chinese text
    assert analyze("GDPR 与个人信息 applies") == [
        "gdpr",
        "个",
        "人",
        "信",
        "息",
        "个人",
        "人信",
        "信息",
        "apply",
    ]


@pytest.mark.parametrize("query", ["cat dog", "dog chases cat", "网络数据罚款", "supersonic plate"])
def test_qdrant_bm25_equals_lucene_bm25(query):
    import bm25s

    store = VectorStore.memory()
    documents = [Document(f"d{i}", text, file=f"d{i}") for i, text in enumerate(DOCS)]
    ingest_documents(documents, store=store, collection="c", chunker=get_chunker("window"))
    hits = SearchService(store).recall("c", query, mode="bm25", recall_k=10)
    ours = {h.payload["source"]: h.score for h in hits}

    reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    reference.index([analyze(text) for text in DOCS], show_progress=False)
    # Lucene (and bm25s's "lucene" method) drop the constant (k1 + 1) factor of classic BM25
    expected = reference.get_scores(analyze(query)) * (1.2 + 1)
    for i, score in enumerate(expected):
        if score > 0:
            assert ours[f"d{i}"] == pytest.approx(score, rel=1e-5)
        else:
            assert f"d{i}" not in ours
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert [h.score for h in hits] == sorted(ours.values(), reverse=True)


def test_document_vectors_do_not_change_when_the_corpus_grows():
    encoder = Bm25Encoder(avg_doc_length=8.0)
    before = encoder.document_vector(DOCS[0])
    assert before == Bm25Encoder(avg_doc_length=8.0).document_vector(DOCS[0])
    assert before.indices == sorted(before.indices)
    assert all(v > 0 for v in before.values)
    # tf saturation: a repeated term weighs more, but less than twice as much
    vec = encoder.document_vector("cat cat mat")
    weights = dict(zip(vec.indices, vec.values, strict=True))
    assert weights[token_id("mat")] < weights[token_id("cat")] < 2 * weights[token_id("mat")]
    assert np.isclose(Bm25Encoder.query_vector("cat cat").values, [1.0]).all()
    assert Bm25Encoder.query_vector("the of and").indices == []


def test_collections_of_an_older_analyzer_must_be_rebuilt():
    from dataclasses import replace

    from finerank.errors import ConflictError
    from finerank.retrieval.ingest import collection_spec

    store = VectorStore.memory()
    chunker = get_chunker("window")
    old = replace(collection_spec(chunker, texts=DOCS), analyzer="finerank-bm25-v1")
    store.create("old", old)
    documents = [Document("d0", DOCS[0], file="d0")]
    with pytest.raises(ConflictError, match=r"finerank-bm25-v1.*rebuild the collection"):
        ingest_documents(documents, store=store, collection="old", chunker=chunker)
    with pytest.raises(ConflictError, match=r"collections delete old, then index it again"):
        SearchService(store).recall("old", "cat", mode="bm25")
