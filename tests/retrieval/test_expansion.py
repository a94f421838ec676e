"""Rocchio pseudo-relevance feedback on sparse vectors, alone and through SearchService."""

from __future__ import annotations

import pytest

from finerank.errors import InvalidInputError
from finerank.retrieval.bm25 import Bm25Encoder, SparseVector
from finerank.retrieval.chunkers import Document, get_chunker
from finerank.retrieval.expansion import PrfConfig, rocchio
from finerank.retrieval.ingest import ingest_documents
from finerank.retrieval.search import SearchService
from finerank.retrieval.store import VectorStore
from finerank.settings import Settings


def test_rocchio_mixes_the_score_weighted_centroid():
    query = SparseVector([1, 2], [1.0, 1.0])
    feedback = [
        (3.0, SparseVector([2, 3], [1.0, 1.0])),  # weight 3/4, each term 1/2 of the document
        (1.0, SparseVector([4], [2.0])),  # weight 1/4
    ]
    expanded = rocchio(query, feedback, terms=10, weight=0.4)
    values = dict(zip(expanded.indices, expanded.values, strict=True))
    assert expanded.indices == [1, 2, 3, 4]
    assert values[1] == pytest.approx(0.6 * 0.5)
    assert values[2] == pytest.approx(0.6 * 0.5 + 0.4 * 0.375)
    assert values[3] == pytest.approx(0.4 * 0.375)
    assert values[4] == pytest.approx(0.4 * 0.25)
    assert sum(expanded.values) == pytest.approx(1.0)
    # only the heaviest centroid terms are kept (3/8 each for 2 and 3; 2 < 3 breaks the tie)
    two = rocchio(query, feedback, terms=1, weight=0.4)
    assert two.indices == [1, 2] and two.values == pytest.approx([0.3, 0.7])


def test_rocchio_without_usable_feedback_keeps_the_query():
    query = SparseVector([5], [1.0])
    assert rocchio(query, [], terms=5, weight=0.5) is query
    assert rocchio(query, [(0.0, SparseVector([6], [1.0]))], terms=5, weight=0.5) is query
    assert rocchio(query, [(1.0, SparseVector([6], [1.0]))], terms=5, weight=0.0) is query


def test_prf_config_is_checked_and_read_from_settings():
    with pytest.raises(InvalidInputError, match="prf docs"):
        PrfConfig(docs=0)
    with pytest.raises(InvalidInputError, match="prf weight"):
        PrfConfig(weight=1.5)
    config = PrfConfig.from_settings(Settings(prf_docs=3, prf_terms=7, prf_weight=0.25))
    assert config == PrfConfig(docs=3, terms=7, weight=0.25)


DOCS = {
    "wing": "lift of a wing in a propeller slipstream",
    "tail": "propeller slipstream effects on tail surfaces",
    "heat": "heat conduction in composite slabs",
    "shock": "shock waves around blunt bodies",
}


@pytest.fixture(scope="module")
def small_store():
    store = VectorStore.memory()
    documents = [Document(name, text, file=name) for name, text in DOCS.items()]
    ingest_documents(documents, store=store, collection="c", chunker=get_chunker("window"))
    yield store
    store.close()


def test_bm25_prf_recalls_a_document_with_no_query_term(small_store):
    service = SearchService(small_store, prf=PrfConfig(docs=1, terms=10, weight=0.5))
    plain = [h.payload["source"] for h in service.recall("c", "wing lift", mode="bm25")]
    assert plain == ["wing"]
    hits = service.recall("c", "wing lift", mode="bm25+prf")
    # the top document's other terms (propeller, slipstream) bring in "tail"
    assert [h.payload["source"] for h in hits] == ["wing", "tail"]
    # the scores are exactly those of the Rocchio query sent as a plain sparse query
    first = small_store.query(
        "c", mode="bm25", limit=1, sparse=Bm25Encoder.query_vector("wing lift")
    )
    vectors = small_store.sparse_vectors("c", [first[0].chunk_id])
    expanded = rocchio(
        Bm25Encoder.query_vector("wing lift"),
        [(first[0].score, vectors[first[0].chunk_id])],
        terms=10,
        weight=0.5,
    )
    direct = small_store.query("c", mode="bm25", limit=10, sparse=expanded)
    assert [(h.chunk_id, h.score) for h in hits] == [(h.chunk_id, h.score) for h in direct]
    # batches give the same runs; filters apply to the feedback pass too
    assert service.recall_batch("c", ["wing lift", "heat"], mode="bm25+prf")[0] == hits
    filtered = service.recall("c", "wing lift", mode="bm25+prf", filters={"source": "tail"})
    assert filtered == []


def test_unknown_mode_names_the_prf_modes(small_store):
    with pytest.raises(InvalidInputError, match=r"bm25\+prf, hybrid\+prf"):
        SearchService(small_store).recall("c", "wing", mode="dense+prf")
