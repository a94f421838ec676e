"""Parallel BM25 analysis gives exactly the serial document vectors."""

from __future__ import annotations

from finerank.retrieval import bm25_pool
from finerank.retrieval.bm25 import Bm25Encoder


def test_parallel_term_counts_equal_serial_ones(shared_data, monkeypatch):
    monkeypatch.setattr(bm25_pool, "PARALLEL_MIN_TEXTS", 100)  # the pool path, on less text
    monkeypatch.setattr(bm25_pool, "TASK_TEXTS", 16)
    lines = (shared_data / "laws" / "cybersecurity_law_2016.md").read_text(encoding="utf-8")
    texts = [line for line in lines.splitlines() if line.strip()] * 4
    texts += ["Servers were attacked; 服务器数据被破坏", "", "the of and"]
    serial = bm25_pool.term_counts(texts, workers=1)
    parallel = bm25_pool.term_counts(texts, workers=2)
    assert parallel == serial and len(parallel) == len(texts)
    encoder = Bm25Encoder(avg_doc_length=30.0)
    for text, count in zip(texts, parallel, strict=True):
        vector = encoder.vector_from_counts(count.length, count.indices, count.frequencies)
        assert vector == encoder.document_vector(text)
    assert parallel[-1].length == 0 and parallel[-2].length == 0


def test_terms_with_the_same_id_add_their_frequencies(monkeypatch):
    # every term of one length collides
    monkeypatch.setattr(bm25_pool, "_crc32", lambda data: len(data.decode()))
    count = bm25_pool.count_terms("law laws court data 数据 数据")
    # terms: law law court data 数 据 数据 数 据 数据 -> lengths 3,3,5,4,1,1,2,1,1,2
    assert count.length == 10
    assert list(count.indices) == [1, 2, 3, 4, 5] and list(count.frequencies) == [4, 2, 2, 1, 1]
