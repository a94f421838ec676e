"""Document context: chunks lifted by their document's other hits, alone and through
SearchService (the default first stage)."""

from __future__ import annotations

import pytest

from finerank.errors import InvalidInputError
from finerank.retrieval.bm25 import Bm25Encoder
from finerank.retrieval.chunkers import Document, get_chunker
from finerank.retrieval.context import DocumentContext, with_document_context
from finerank.retrieval.ingest import ingest_documents
from finerank.retrieval.search import SearchService
from finerank.retrieval.store import StoredHit, StoreQuery, VectorStore
from finerank.settings import Settings

CHUNKS = {  # chunk id -> (file, text)
    "L1": ("labour", "employers pay wages monthly"),
    "L2": ("labour", "overtime wages are doubled on rest days"),
    "L3": ("labour", "wages hours and rest days are written in the contract"),
    "T1": ("traffic", "the driver pays damages for the accident and the lost wages"),
    "H1": ("heat", "heat conduction in composite slabs"),
}


def _hit(rank, score, chunk_id, file):
    return StoredHit(rank, score, chunk_id, {"chunk_id": chunk_id, "file": file})


def test_a_document_with_more_evidence_lifts_its_chunks():
    hits = [_hit(1, 4.0, "a1", "a"), _hit(2, 3.0, "b1", "b"), _hit(3, 2.5, "b2", "b")]
    lifted = with_document_context(hits, weight=1.0, limit=3)
    assert [h.chunk_id for h in lifted] == ["b1", "a1", "b2"]
    assert [h.rank for h in lifted] == [1, 2, 3]
    # (score + weight * best * evidence / best evidence) / (1 + weight), evidence a 4, b 5.5
    assert [h.score for h in lifted] == pytest.approx(
        [(3.0 + 4.0) / 2, (4.0 + 4.0 * 4.0 / 5.5) / 2, (2.5 + 4.0) / 2]
    )
    assert [h.chunk_id for h in with_document_context(hits, weight=1.0, limit=1)] == ["b1"]


def test_nothing_changes_without_a_document_of_two_hits_or_with_weight_zero():
    single = [_hit(1, 4.0, "a1", "a"), _hit(2, 3.0, "b1", "b"), _hit(3, 1.0, "c1", "c")]
    assert with_document_context(single, weight=0.5, limit=2) == single[:2]
    multi = [_hit(1, 4.0, "a1", "a"), _hit(2, 3.0, "b1", "b"), _hit(3, 2.9, "b2", "b")]
    assert with_document_context(multi, weight=0.0, limit=3) == multi
    assert with_document_context([], weight=0.5, limit=3) == []
    # ranks are renumbered from 1 whatever the input said
    shifted = [_hit(5, 4.0, "a1", "a"), _hit(9, 3.0, "b1", "b")]
    assert [h.rank for h in with_document_context(shifted, weight=0.5, limit=2)] == [1, 2]


def test_the_document_index_score_is_added_scaled_by_the_best_document():
    from finerank.retrieval.store.base import DocumentScore

    hits = [_hit(1, 4.0, "a1", "a"), _hit(2, 3.0, "b1", "b"), _hit(3, 2.0, "b2", "b")]
    hits.append(_hit(4, 1.0, "c1", "c"))
    index = {"a": DocumentScore(2.0, 1), "b": DocumentScore(8.0, 4), "d": DocumentScore(9.0, 3)}
    lifted = with_document_context(hits, weight=0.5, limit=4, documents=index, index_weight=1.0)
    evidence = {"a": 4.0, "b": 5.0, "c": 1.0}
    # a has one chunk: its document score is its chunk's (4 / 4); b: 8 / 9 (d, not in the
    # pass, is the best document); c is not among the index's documents: nothing
    document = {"a": 1.0, "b": 8.0 / 9.0, "c": 0.0}
    want = {
        h.chunk_id: (h.score + 0.5 * 4.0 * evidence[f] / 5.0 + 1.0 * 4.0 * document[f]) / 2.5
        for h in hits
        for f in [h.payload["file"]]
    }
    assert {h.chunk_id: h.score for h in lifted} == pytest.approx(want)
    assert [h.chunk_id for h in lifted] == sorted(want, key=lambda c: -want[c])
    # no document with two hits in the pass (short documents): nothing changes, index or not
    single = [_hit(1, 4.0, "a1", "a"), _hit(2, 3.0, "b1", "b")]
    assert with_document_context(
        single, weight=0.5, limit=2, documents=index, index_weight=1.0
    ) == (single)
    # no index (a collection built before it): the pass evidence alone
    assert with_document_context(hits, weight=0.5, limit=4, documents={}, index_weight=1.0) == (
        with_document_context(hits, weight=0.5, limit=4)
    )


def test_settings_and_bad_values():
    context = DocumentContext.from_settings(
        Settings(document_weight=0.5, document_depth=300, document_index_weight=0.7)
    )
    assert context == DocumentContext(weight=0.5, depth=300, index_weight=0.7)
    assert context.pass_limit(100) == 300 and context.pass_limit(500) == 500
    off = DocumentContext(weight=0.0, index_weight=0.0)
    assert not off.enabled and off.pass_limit(100) == 100  # off: no deeper pass
    assert DocumentContext(weight=0.0).enabled  # the document index alone still needs one
    for bad in (
        {"weight": -0.1},
        {"weight": True},
        {"depth": 0},
        {"depth": 2.5},
        {"index_weight": 11.0},
        {"index_weight": "0.4"},
    ):
        with pytest.raises(InvalidInputError):
            DocumentContext(**bad)


def _laws_store(store):
    documents = [Document(cid, text, file=file) for cid, (file, text) in CHUNKS.items()]
    ingest_documents(documents, store=store, collection="c", chunker=get_chunker("window"))
    return store


@pytest.fixture(scope="module")
def laws_store():
    store = _laws_store(VectorStore.memory())
    yield store
    store.close()


def _ids(hits):
    return [h.payload["source"] for h in hits]


def test_search_service_applies_document_context(laws_store):
    plain = SearchService(laws_store, context=DocumentContext(weight=0.0, index_weight=0.0))
    lifted = SearchService(
        laws_store, context=DocumentContext(weight=2.0, depth=50, index_weight=0.0)
    )
    query = "driver wages rest"
    before = plain.recall("c", query, mode="bm25")
    after = lifted.recall("c", query, mode="bm25")
    # the traffic article has the rarest word, but the labour law has three wage articles
    assert _ids(before)[0] == "T1" and set(_ids(before)) == {"T1", "L1", "L2", "L3"}
    assert _ids(after)[0] in {"L1", "L2", "L3"} and set(_ids(after)) == set(_ids(before))
    # exactly the function applied to the plain first pass, with whole payloads (the deep
    # pass reads only file and source)
    want = with_document_context(before, weight=2.0, limit=100)
    assert [(h.chunk_id, h.score) for h in after] == [(h.chunk_id, h.score) for h in want]
    assert [h.payload for h in after] == [h.payload for h in want]
    assert {"text", "start", "end", "metadata"} <= set(after[0].payload)
    # recall_k cuts after re-ranking; batches and +prf modes get it too
    assert _ids(lifted.recall("c", query, mode="bm25", recall_k=1)) == _ids(after)[:1]
    assert lifted.recall_batch("c", [query, "heat"], mode="bm25")[0] == after
    assert _ids(lifted.recall("c", query, mode="bm25+prf"))[0] in {"L1", "L2", "L3"}


def test_the_default_service_uses_the_settings_default(laws_store):
    assert SearchService(laws_store).context == DocumentContext.from_settings(Settings())
    off = SearchService.from_settings(
        Settings(document_weight=0, document_index_weight=0), laws_store
    )
    assert not off.context.enabled
    assert _ids(off.recall("c", "driver wages rest", mode="bm25"))[0] == "T1"


def test_a_qdrant_server_store_gives_the_same_hits(laws_store):
    """The server path (qdrant-client; its local mode stands in) reads the deep pass's few
    fields and the kept hits' payloads as Qdrant Edge does."""
    from finerank.retrieval.store.client import ClientStore

    server = _laws_store(ClientStore.local(None))
    try:
        context = DocumentContext(weight=2.0, depth=50)
        for mode in ("bm25", "bm25+prf"):
            edge = SearchService(laws_store, context=context).recall(
                "c", "driver wages rest", mode=mode
            )
            client = SearchService(server, context=context).recall(
                "c", "driver wages rest", mode=mode
            )
            assert [(h.chunk_id, h.payload) for h in client] == [
                (h.chunk_id, h.payload) for h in edge
            ]
            assert [h.score for h in client] == pytest.approx([h.score for h in edge], rel=1e-5)
        hits = server.query("c", mode="bm25", limit=2, sparse=Bm25Encoder.query_vector("wages"))
        few = server.query_batch(
            "c", [StoreQuery("bm25", 2, sparse=Bm25Encoder.query_vector("wages"), fields=("file",))]
        )[0]
        assert [set(h.payload) for h in few] == [{"chunk_id", "file"}] * 2
        assert server.payloads("c", [h.chunk_id for h in few]) == {
            h.chunk_id: h.payload for h in hits
        }
    finally:
        server.close()
