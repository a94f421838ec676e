"""The document index (one BM25 vector per file, next to the chunks): built by ingest, kept in
step when files are added, replaced and deleted, dropped with its collection, built for a
collection that has none by its next ingest; the same on Qdrant Edge and the server store
(qdrant-client's local mode standing in)."""

from __future__ import annotations

import math

import pytest

from finerank.retrieval import bm25_pool
from finerank.retrieval.bm25 import Bm25Encoder, token_id
from finerank.retrieval.bm25_pool import count_terms
from finerank.retrieval.chunkers import Document, get_chunker
from finerank.retrieval.context import DocumentContext, with_document_context
from finerank.retrieval.documents import chunk_digest, document_vector, sync_document_index
from finerank.retrieval.ingest import ingest_documents
from finerank.retrieval.search import SearchService
from finerank.retrieval.store import VectorStore
from finerank.retrieval.store.base import DocumentScore, document_index_name
from finerank.retrieval.store.client import ClientStore

FILES = {
    "labour.txt": [
        "employers pay wages monthly",
        "overtime wages are doubled on rest days",
        "wages hours and rest days are written in the contract",
    ],
    "traffic.txt": ["the driver pays damages for the accident and the lost wages"],
    "heat.txt": ["heat conduction in composite slabs", "heat flux at the wall"],
}
CHUNKER = get_chunker("window")


def documents(files=FILES):
    # one Document per article, grouped in files as a law's articles are
    return [
        Document(f"{file}#{i}", text, file=file)
        for file, texts in files.items()
        for i, text in enumerate(texts)
    ]


def ingest(store, files=FILES, names=None):
    return ingest_documents(
        documents(files), store=store, collection="c", chunker=CHUNKER, files=names
    )


@pytest.fixture(params=["edge", "server"])
def store(request):
    store = VectorStore.memory() if request.param == "edge" else ClientStore.local(None)
    yield store
    store.close()


def by_term(vector):
    return dict(zip(vector.indices, vector.values, strict=True))


def stored_documents(store):
    """file -> (vector, chunks, digest), read back from the companion collection."""
    return {d.file: (by_term(d.sparse), d.chunks, d.digest) for d in store.iter_documents("c")}


def expected_vector(texts):
    return by_term(
        document_vector(
            [count_terms(CHUNKER.chunk(Document("x", t))[0].indexed_text) for t in texts]
        )
    )


def test_ingest_builds_one_bm25_vector_per_file(store):
    report = ingest(store)
    assert report.documents_indexed == 3
    stored = stored_documents(store)
    assert stored.keys() == FILES.keys()
    ids = store.ids_by_file("c")
    for file, texts in FILES.items():
        vector, chunks, digest = stored[file]
        assert chunks == len(texts) and digest == chunk_digest(ids[file])
        assert vector == pytest.approx(expected_vector(texts))
    # "wages" 3 times in labour: tf 3 -> 3 * 2.2 / (3 + 1.2) (b 0: length does not count)
    assert stored["labour.txt"][0][token_id("wage")] == pytest.approx(3 * 2.2 / 4.2)
    # the companion is no collection of its own: not listed, not nameable by users
    assert [c.name for c in store.list_collections()] == ["c"]
    assert store.info("c").points == 6


def test_document_scores_use_idf_over_documents(store):
    ingest(store)
    [scores] = store.query_documents("c", [Bm25Encoder.query_vector("wages heat")], 10)
    # wages: in 2 of 3 documents; heat: in 1 (over chunks it would be 4 of 6 and 2 of 6)
    idf_wages = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    idf_heat = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    assert scores["labour.txt"] == DocumentScore(
        pytest.approx(idf_wages * 3 * 2.2 / 4.2, rel=1e-5), 3
    )
    assert scores["traffic.txt"].score == pytest.approx(idf_wages * 1.0, rel=1e-5)
    assert scores["heat.txt"] == DocumentScore(pytest.approx(idf_heat * 2 * 2.2 / 3.2, rel=1e-5), 2)
    # no index term: nothing; a limit keeps the best
    assert store.query_documents("c", [Bm25Encoder.query_vector("的"), None], 10) == [{}, {}]
    [best] = store.query_documents("c", [Bm25Encoder.query_vector("wages heat")], 1)
    assert list(best) == [max(scores, key=lambda f: scores[f].score)]


def test_replaced_and_deleted_files_keep_the_index_in_step(store):
    ingest(store)
    before = stored_documents(store)
    assert ingest(store).documents_indexed == 0  # nothing changed: nothing rewritten
    changed = {**FILES, "traffic.txt": ["the driver pays a fine", "and loses the licence"]}
    report = ingest(store, {"traffic.txt": changed["traffic.txt"]})
    assert report.added == 2 and report.deleted == 1 and report.documents_indexed == 1
    after = stored_documents(store)
    assert after["labour.txt"] == before["labour.txt"] and after["heat.txt"] == before["heat.txt"]
    assert after["traffic.txt"][1] == 2
    assert after["traffic.txt"][0] == pytest.approx(expected_vector(changed["traffic.txt"]))
    # a file listed with no chunks any more: its chunks and its document go
    report = ingest(store, {}, names=["heat.txt"])
    assert report.deleted == 2 and report.documents_indexed == 1
    assert stored_documents(store).keys() == {"labour.txt", "traffic.txt"}
    [scores] = store.query_documents("c", [Bm25Encoder.query_vector("heat licence")], 10)
    assert list(scores) == ["traffic.txt"]


def test_deleting_the_collection_deletes_its_index(store):
    ingest(store)
    assert store.has_document_index("c")
    store.delete("c")
    assert not store.has_document_index("c") and store.list_collections() == []
    ingest(store, {"heat.txt": FILES["heat.txt"]})  # a new collection of the same name
    assert stored_documents(store).keys() == {"heat.txt"}


def test_a_collection_without_an_index_searches_as_before_until_its_next_ingest(store):
    """Collections written before the document index: searches work (without document
    scores), and the next ingest, even of unchanged files, builds the whole index."""
    ingest(store)
    store._drop_collection(document_index_name("c"))  # as an older finerank left it
    assert not store.has_document_index("c")
    query = "driver wages rest"
    with_index = SearchService(store, context=DocumentContext(weight=0.2, index_weight=1.0))
    without = SearchService(store, context=DocumentContext(weight=0.2, index_weight=0.0))
    assert with_index.recall("c", query, mode="bm25") == without.recall("c", query, mode="bm25")
    report = ingest(store, {"heat.txt": FILES["heat.txt"]})
    assert report.added == report.deleted == 0 and report.documents_indexed == 3
    assert stored_documents(store).keys() == FILES.keys()
    assert sync_document_index(store, "c") == 0


def test_search_adds_the_document_score(store):
    ingest(store)
    context = DocumentContext(weight=0.2, depth=50, index_weight=1.0)
    query = "driver wages rest"
    plain = SearchService(store, context=DocumentContext(weight=0.0, index_weight=0.0))
    before = plain.recall("c", query, mode="bm25")
    [scores] = store.query_documents("c", [Bm25Encoder.query_vector(query)], 50)
    want = with_document_context(before, weight=0.2, limit=100, documents=scores, index_weight=1.0)
    got = SearchService(store, context=context).recall("c", query, mode="bm25")
    assert [(h.chunk_id, h.score) for h in got] == [(h.chunk_id, h.score) for h in want]
    # the single-chunk traffic document counts its chunk's own score; labour's documents
    # score lifts its chunks above what the pass evidence alone gives
    alone = SearchService(store, context=DocumentContext(weight=0.2, depth=50, index_weight=0))
    alone_scores = {
        h.chunk_id: h.score / alone.recall("c", query, mode="bm25")[0].score
        for h in alone.recall("c", query, mode="bm25")
    }
    top = got[0].score
    for hit in got:
        if hit.payload["file"] == "labour.txt":
            assert hit.score / top > alone_scores[hit.chunk_id]


class StoreCalls:
    """Records the engine calls of a real store (spied on, not replaced): scrolls and reads
    by collection, points written by collection, and texts analyzed."""

    def __init__(self, store, monkeypatch):
        self.scrolls: list[str] = []
        self.reads: list[tuple[str, int]] = []
        self.writes: list[tuple[str, int]] = []
        self.analyzed = 0

        def spy(method, record):
            def call(name, *args, **kwargs):
                record(name, *args)
                return method(name, *args, **kwargs)

            return call

        monkeypatch.setattr(store, "_scroll", spy(store._scroll, lambda n: self.scrolls.append(n)))
        monkeypatch.setattr(
            store,
            "_retrieve",
            spy(store._retrieve, lambda n, ids: self.reads.append((n, len(ids)))),
        )
        monkeypatch.setattr(
            store, "_write", spy(store._write, lambda n, ps: self.writes.append((n, len(ps))))
        )
        real = bm25_pool.count_terms

        def count(text):
            self.analyzed += 1
            return real(text)

        monkeypatch.setattr(bm25_pool, "count_terms", count)


MANY = {
    f"law{i:02d}.txt": [f"article {i} on wages", f"article {i} on rest days"] for i in range(30)
}


def test_upkeep_costs_the_files_of_the_ingest_not_the_collection(store, monkeypatch):
    """An ingest that replaces one file and deletes another reads the digests of those two
    documents only, rebuilds one from the counts it computed (each new chunk analyzed once,
    nothing read back) and never scrolls the document index or the chunks a second time."""
    ingest(store, {**FILES, **MANY})
    calls = StoreCalls(store, monkeypatch)
    labour = ["employers pay wages monthly", "wages are paid in money, not in kind"]
    report = ingest(store, {"labour.txt": labour}, names=["labour.txt", "heat.txt"])
    assert (report.added, report.deleted, report.documents_indexed) == (1, 4, 2)
    index = document_index_name("c")
    assert calls.scrolls == ["c"]  # the ingest's own diff; the document upkeep adds none
    assert calls.reads == [(index, 2)]  # the two files' digests, no chunk payload
    assert calls.writes == [("c", 1), (index, 1)]
    # each chunk of the new labour.txt once: the new one for its vector (and its document),
    # the kept one for the document (before: both analyzed again after reading them back)
    assert calls.analyzed == len(labour)
    stored = stored_documents(store)
    assert "heat.txt" not in stored and len(stored) == 2 + len(MANY)
    assert stored["labour.txt"][0] == pytest.approx(expected_vector(labour))


def test_a_replaced_file_gets_the_vector_a_full_rebuild_gives(store):
    """A replaced file's document (built from the ingest's counts: new chunks and kept ones)
    is the one sync_document_index builds from the stored chunks, bit for bit."""
    ingest(store)
    changed = {
        "labour.txt": [FILES["labour.txt"][0], "overtime is paid at 150%", "wages wages wages"],
        "heat.txt": ["heat conduction in composite slabs"],
    }
    ingest(store, changed)
    incremental = stored_documents(store)
    store._drop_collection(document_index_name("c"))
    assert sync_document_index(store, "c") == 3
    assert stored_documents(store) == incremental
    assert incremental["labour.txt"][1] == 3 and incremental["heat.txt"][1] == 1


def test_a_file_whose_document_went_stale_is_rebuilt_when_ingested_again(store):
    """A run interrupted between a file's chunk writes and its document leaves the chunks in
    place; ingesting the unchanged file again writes its document (from the texts it holds)."""
    ingest(store)
    whole = stored_documents(store)
    store.delete_documents("c", ["traffic.txt"])  # as an interrupted run leaves it
    report = ingest(store)
    assert report.added == report.deleted == 0 and report.documents_indexed == 1
    assert stored_documents(store) == whole


def test_migrate_checks_a_current_collection_against_every_chunk(tmp_path):
    """Chunks written straight to the store (around finerank's ingest) are picked up by
    ``finerank collections migrate NAME``: the full check from the stored chunks."""
    from typer.testing import CliRunner

    from finerank.cli import app
    from finerank.retrieval.store import StoredPoint
    from finerank.retrieval.store.edge import EdgeStore

    with EdgeStore(tmp_path) as edge:
        ingest(edge)
        text = "wages of seafarers"
        edge.upsert(
            "c",
            [
                StoredPoint(
                    "f" * 32,
                    {"chunk_id": "f" * 32, "file": "sea.txt", "text": text, "context": ""},
                    Bm25Encoder(edge.spec("c").avg_doc_length).document_vector(text),
                )
            ],
        )
        assert "sea.txt" not in stored_documents(edge)
    result = CliRunner().invoke(app, ["collections", "migrate", "c", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "c: already on Qdrant Edge; document index checked" in result.output
    assert "1 documents rebuilt or deleted" in result.output
    with EdgeStore(tmp_path) as edge:
        assert stored_documents(edge)["sea.txt"][1] == 1


def test_the_server_ingest_keeps_the_index_from_the_counts_it_computed(monkeypatch):
    """The server's ingest (RetrievalService.add_documents: each request holds its files
    whole) builds and replaces documents as ``finerank index`` does, analyzing each chunk
    once and scrolling nothing for the document index."""
    import asyncio

    from finerank.retrieval.service import RetrievalService
    from finerank.settings import Settings

    service = RetrievalService(Settings())
    service.open_store(VectorStore.memory)
    service.start()
    reference = VectorStore.memory()
    try:
        report = asyncio.run(service.add_documents("c", documents(), CHUNKER))
        assert report.documents_indexed == 3
        calls = StoreCalls(service.store, monkeypatch)
        changed = {"traffic.txt": ["the driver pays a fine", "and loses the licence"]}
        report = asyncio.run(service.add_documents("c", documents(changed), CHUNKER))
        assert (report.added, report.deleted, report.documents_indexed) == (2, 1, 1)
        assert calls.scrolls == ["c"] and calls.analyzed == 2
        ingest(reference, {**FILES, **changed})
        assert stored_documents(service.store) == stored_documents(reference)
    finally:
        service.stop()
        reference.close()
