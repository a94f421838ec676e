"""Collections written by finerank's first store are detected and migrated to Qdrant Edge.

``data/legacy_local_mode`` was written by the store as of main ab3b1b4 (qdrant-client local
mode; see ``data/README.md``), and ``legacy_local_mode_expected.json`` holds that code's
search results on it: after ``finerank collections migrate`` the Edge store returns them for
dense search. Its BM25 vectors are those of analyzer finerank-bm25-v1, which migration computes
again with the current analyzer: BM25 and hybrid results then equal those of the same
documents ingested afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finerank.cli import app
from finerank.errors import ConflictError, NotFoundError
from finerank.retrieval.bm25 import ANALYZER_VERSION, Bm25Encoder
from finerank.retrieval.chunkers import Document, get_chunker
from finerank.retrieval.ingest import ingest_documents
from finerank.retrieval.store import StoredHit
from finerank.retrieval.store.edge import EdgeStore
from finerank.retrieval.store.migrate import indexed_text, migrate_collection
from tests.retrieval.test_store import assert_same_hits

DATA = Path(__file__).parent / "data"
ARTICLES = Path(__file__).parents[2] / "data" / "laws" / "articles.jsonl"


def legacy_vector(text: str) -> list[float]:
    """The 8-dim hash embedding the fixture was written with."""
    import hashlib

    import numpy as np

    raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:32], dtype=np.uint32)
    vector = raw.astype(np.float64) / 2**31 - 1.0
    return (vector / np.linalg.norm(vector)).astype(np.float32).tolist()


class HashEmbedder:
    """The embedder the fixture was written with (see data/README.md)."""

    name, dimension, source = "hash-embedder-8", 8, None

    def embed_documents(self, texts, dimensions=None):
        import numpy as np

        return np.array([legacy_vector(t) for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def fresh():
    """The fixture's documents ingested afresh by this finerank (same chunk ids)."""
    records = [json.loads(line) for line in ARTICLES.read_text(encoding="utf-8").splitlines()]
    docs = []
    for r in records[:40]:
        meta = {k: r[k] for k in ("law", "article_no", "article_cn", "chapter")}
        source, file = f"articles.jsonl#{r['id']}", f"file{r['article_no'] % 3}.jsonl"
        docs.append(Document(source, r["text"], meta, file))
    store = EdgeStore.temporary()
    chunker = get_chunker("legal")
    ingest_documents(docs, store=store, collection="laws", chunker=chunker, embedder=HashEmbedder())
    window = get_chunker("window", max_tokens=32)
    ingest_documents(docs[:12], store=store, collection="laws-bm25", chunker=window)
    yield store
    store.close()


@pytest.fixture()
def legacy_dir(tmp_path) -> Path:
    target = tmp_path / "qdrant"
    shutil.copytree(DATA / "legacy_local_mode", target)
    return target


def expected_results():
    return json.loads((DATA / "legacy_local_mode_expected.json").read_text(encoding="utf-8"))


def assert_results_as_recorded(store: EdgeStore, name: str, fresh: EdgeStore) -> None:
    """Dense hits as the first store recorded them; BM25 and hybrid as a fresh ingest's."""
    recorded = expected_results()[name]
    for key, hits in recorded.items():
        mode, query = key.split(":", 1)

        def run(on: EdgeStore, mode=mode, query=query):
            return on.query(
                name,
                mode=mode,  # type: ignore[arg-type]
                limit=10,
                sparse=Bm25Encoder.query_vector(query),
                dense=legacy_vector(query) if mode != "bm25" else None,
            )

        got = run(store)
        assert got, key
        if mode == "bm25":
            assert_same_hits(got, run(fresh))
        elif mode == "hybrid":  # RRF of ranks: the same hits and scores as a fresh ingest
            assert [(h.chunk_id, h.score) for h in got] == [
                (h.chunk_id, h.score) for h in run(fresh)
            ]
        want = [StoredHit(rank, score, chunk) for rank, (chunk, score) in enumerate(hits, 1)]
        if mode == "dense":
            assert_same_hits(got, want)


def test_old_collections_are_detected_with_the_way_forward(legacy_dir):
    with EdgeStore(legacy_dir) as store:
        assert store.legacy_collections() == ["laws", "laws-bm25"]
        assert store.list_collections() == []
        assert store.exists("laws")
        for call in (
            lambda: store.spec("laws"),
            lambda: store.info("laws"),
            lambda: store.ids_by_file("laws"),
            lambda: store.query(
                "laws", mode="bm25", limit=3, sparse=Bm25Encoder.query_vector("罚款")
            ),
            lambda: ingest_documents(
                [Document("x", "第一条 网络运营者应当遵守法律。", file="x")],
                store=store,
                collection="laws",
                chunker=get_chunker("legal"),
            ),
        ):
            with pytest.raises(ConflictError, match="finerank collections migrate laws"):
                call()
        with pytest.raises(NotFoundError):
            migrate_collection(store, "nope")
    result = CliRunner().invoke(app, ["collections", "list", "--data-dir", str(legacy_dir)])
    assert result.exit_code == 0, result.output
    assert "laws: old format" in result.output
    assert "finerank collections migrate laws-bm25" in result.output


def test_migrate_keeps_points_and_results(legacy_dir, fresh):
    recorded = expected_results()
    runner = CliRunner()
    result = runner.invoke(app, ["collections", "migrate", "laws", "--data-dir", str(legacy_dir)])
    assert result.exit_code == 0, result.output
    assert "laws: 40 points copied to Qdrant Edge" in result.output
    assert f"BM25 vectors of finerank-bm25-v1 computed again with {ANALYZER_VERSION}" in (
        result.output
    )
    assert not (legacy_dir / "collection" / "laws").exists()  # the old copy is gone
    with EdgeStore(legacy_dir) as store:
        assert store.legacy_collections() == ["laws-bm25"]
        info = store.info("laws")
        assert info.points == recorded["points"]["laws"]
        # the spec is the old one but for the analyzer and the average length it measures
        assert info.spec == fresh.spec("laws")
        old = recorded["spec"]["laws"]
        assert {**info.spec.to_metadata(), "bm25": old["bm25"]} == old
        assert info.spec.analyzer == ANALYZER_VERSION != old["bm25"]["analyzer"]
        migrated = {p.chunk_id: p for p in store.iter_points("laws")}
        assert migrated.keys() == {p.chunk_id for p in fresh.iter_points("laws")}
        for point in fresh.iter_points("laws"):
            assert migrated[point.chunk_id].sparse.indices == point.sparse.indices
            assert migrated[point.chunk_id].sparse.values == pytest.approx(point.sparse.values)
            assert indexed_text(point.payload)  # what both analyzed
        assert_results_as_recorded(store, "laws", fresh)
        # the migration builds the document index the old store had not, as ingest does
        assert store.document_digests("laws") == fresh.document_digests("laws") != {}
        with pytest.raises(ConflictError, match="already in the Qdrant Edge format"):
            migrate_collection(store, "laws")
    # without names: every remaining old-format collection
    result = runner.invoke(app, ["collections", "migrate", "--data-dir", str(legacy_dir)])
    assert result.exit_code == 0, result.output
    assert "laws-bm25: 46 points" in result.output
    with EdgeStore(legacy_dir) as store:
        assert [c.name for c in store.list_collections()] == ["laws", "laws-bm25"]
        assert store.legacy_collections() == []
        assert_results_as_recorded(store, "laws-bm25", fresh)
        # a migrated collection is a normal one: ingest extends it
        report = ingest_documents(
            [Document("new", "新的条文 关于 罚款。", file="new.txt")],
            store=store,
            collection="laws-bm25",
            chunker=get_chunker("window", max_tokens=32),
        )
        assert report.added == 1 and store.info("laws-bm25").points == 47
    result = runner.invoke(app, ["collections", "migrate", "--data-dir", str(legacy_dir)])
    assert result.exit_code == 0 and "no old-format collections" in result.output


def test_interrupted_migration_is_invisible_and_reruns(legacy_dir, monkeypatch, fresh):
    class Interrupted(Exception):
        pass

    with EdgeStore(legacy_dir) as store:
        calls = []
        original = store.upsert

        def failing_upsert(name, points):
            calls.append(1)
            if len(calls) == 2:
                raise Interrupted
            return original(name, points)

        monkeypatch.setattr(store, "upsert", failing_upsert)
        with pytest.raises(Interrupted):
            migrate_collection(store, "laws", batch_size=16)
        monkeypatch.undo()
        # half-written: not a collection yet, and the old copy is intact
        assert store.list_collections() == [] and store.legacy_collections() == [
            "laws",
            "laws-bm25",
        ]
        with pytest.raises(ConflictError, match="migrate"):
            store.spec("laws")
        report = migrate_collection(store, "laws", batch_size=16, keep_old=True)
        assert report.points == 40 and not report.deleted_old
        assert report.reencoded_from == "finerank-bm25-v1"
        assert_results_as_recorded(store, "laws", fresh)
        # kept old copy: the new one wins until it is deleted, then the old one shows again
        assert store.legacy_collections() == ["laws-bm25"]
        store.delete("laws")
        assert store.legacy_collections() == ["laws", "laws-bm25"]
        store.delete("laws")  # now the old copy
        assert store.legacy_collections() == ["laws-bm25"] and not store.exists("laws")


def test_migration_of_the_current_analyzer_copies_vectors(legacy_dir, fresh):
    """A collection already built by this analyzer keeps its BM25 vectors as they are."""
    meta_path = legacy_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["collections"]["laws"]["metadata"]["bm25"]["analyzer"] = ANALYZER_VERSION
    meta_path.write_text(json.dumps(meta))
    with EdgeStore(legacy_dir) as store:
        report = migrate_collection(store, "laws")
        assert report.reencoded_from is None and "computed again" not in report.summary()
        spec = store.spec("laws")
        assert spec.avg_doc_length == expected_results()["spec"]["laws"]["bm25"]["avg_doc_length"]
        # the v1 vectors were copied unchanged, so they differ from a fresh (v2) ingest
        migrated = {p.chunk_id: p.sparse for p in store.iter_points("laws")}
        assert any(migrated[p.chunk_id] != p.sparse for p in fresh.iter_points("laws"))
