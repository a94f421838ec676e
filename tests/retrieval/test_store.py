"""The shared store suite: every test runs on both engines.

``edge`` is Qdrant Edge in a data directory (the embedded default). ``client`` is the
qdrant-client store that talks to a Qdrant server (``--qdrant-url``); no Qdrant server can be
installed here, so it runs against qdrant-client's local mode, which speaks the same client
calls. Besides each engine meeting the reference semantics (Qdrant's BM25 IDF formula, exact
cosine, Qdrant's RRF and DBSF formulas), the two engines must return the same hits and scores
for the same data, query, filter and fusion.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter

import numpy as np
import pytest

from finerank.errors import ConflictError, InvalidInputError, NotFoundError
from finerank.retrieval.bm25 import Bm25Encoder, SparseVector, idf
from finerank.retrieval.chunkers import get_chunker
from finerank.retrieval.ingest import ingest_documents, load_jsonl
from finerank.retrieval.store import (
    CollectionSpec,
    FusionSpec,
    StoredPoint,
    StoreQuery,
    check_collection_name,
    open_store,
    point_id,
)
from finerank.retrieval.store.client import ClientStore
from finerank.retrieval.store.edge import CACHED_FIELDS as CACHED
from finerank.retrieval.store.edge import EdgeStore

KINDS = ("edge", "client")
DIM = 16


class HashEmbedder:
    """Deterministic unit vectors from text hashes: same vectors in every process, no model."""

    name, dimension, source = "hash-embedder-16", DIM, None

    def embed_documents(self, texts, *, dimensions=None):
        return np.stack([hash_vector(text) for text in texts])

    def embed_queries(self, texts, *, instruction=None, dimensions=None):
        return self.embed_documents(texts)


def hash_vector(text: str, dim: int = DIM) -> np.ndarray:
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range(dim // 8 + 1))
    vector = np.frombuffer(raw[: 4 * dim], dtype=np.uint32).astype(np.float64) / 2**31 - 1.0
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def make_store(kind: str, path):
    return EdgeStore(path) if kind == "edge" else ClientStore.local(None)


@pytest.fixture(params=KINDS)
def store(request, tmp_path):
    store = make_store(request.param, tmp_path / "store")
    yield store
    store.close()


@pytest.fixture(scope="module")
def laws(shared_data, tmp_path_factory):
    """Both engines holding the same 289 articles (legal chunker, BM25 + hash vectors)."""
    documents = load_jsonl(shared_data / "laws" / "articles.jsonl")
    queries = [
        json.loads(line)["text"]
        for line in (shared_data / "stard" / "queries.jsonl").open(encoding="utf-8")
    ][:12] + ["网络运营者 罚款", "个人信息 处理者 同意", "关键信息基础设施"]
    stores = {}
    for kind in KINDS:
        stores[kind] = make_store(kind, tmp_path_factory.mktemp(kind))
        report = ingest_documents(
            documents,
            store=stores[kind],
            collection="laws",
            chunker=get_chunker("legal"),
            embedder=HashEmbedder(),
            batch_size=128,
        )
        assert report.added == 289
    yield stores, queries
    for store in stores.values():
        store.close()


def assert_same_hits(got, want, rel=1e-5):
    """Same scores rank by rank; same chunks except among ties at the cut (either engine
    may keep any of them)."""
    assert len(got) == len(want)
    assert [h.rank for h in got] == list(range(1, len(got) + 1))
    for a, b in zip(got, want, strict=True):
        assert a.score == pytest.approx(b.score, rel=rel, abs=1e-7)
    if not want:
        return
    last = want[-1].score
    tied = lambda h: math.isclose(h.score, last, rel_tol=rel, abs_tol=1e-7)  # noqa: E731
    assert {h.chunk_id for h in got if not tied(h)} == {h.chunk_id for h in want if not tied(h)}
    scores = {h.chunk_id: h.score for h in want}
    for hit in got:
        if not tied(hit):
            assert hit.score == pytest.approx(scores[hit.chunk_id], rel=rel, abs=1e-7)


def points(n: int, *, dense: bool = True, files: int = 3, seed: int = 0) -> list[StoredPoint]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        chunk = hashlib.sha256(f"chunk {i}".encode()).hexdigest()[:32]
        terms = sorted(int(t) for t in rng.choice(50, size=5, replace=False))
        out.append(
            StoredPoint(
                chunk,
                {
                    "chunk_id": chunk,
                    "text": f"text {i}",
                    "context": "",
                    "source": f"doc{i % 7}",
                    "file": f"file{i % files}",
                    "start": 0,
                    "end": 6,
                    "chunk_index": i,
                    "metadata": {"n": i % 5, "kind": ["even", "odd"][i % 2], "tags": ["a", "b"]},
                },
                SparseVector(terms, [float(w) for w in rng.uniform(0.2, 2.0, size=5)]),
                rng.normal(size=DIM).astype(np.float32) if dense else None,
            )
        )
    return out


SPEC = CollectionSpec(
    embedding_model="m", dimension=DIM, chunker={"name": "window"}, avg_doc_length=10.0
)


# --- collections ---------------------------------------------------------------------------


def test_collection_names_match_whole_strings():
    assert check_collection_name("a") == "a"
    assert check_collection_name("Laws_2025.v-1") == "Laws_2025.v-1"
    for bad in ["laws\n", "\nlaws", "", "-laws", ".laws", "a" * 64, "a/b", "a b", "罚款", None]:
        with pytest.raises(InvalidInputError, match="invalid collection name"):
            check_collection_name(bad)


def test_collection_lifecycle(store):
    assert store.list_collections() == [] and not store.exists("c")
    with pytest.raises(NotFoundError, match="does not exist"):
        store.spec("c")
    with pytest.raises(NotFoundError):
        store.query("c", mode="bm25", limit=3, sparse=SparseVector([1], [1.0]))
    store.create("c", SPEC)
    assert store.exists("c") and store.spec("c") == SPEC
    with pytest.raises(ConflictError, match="already exists"):
        store.create("c", SPEC)
    bm25_only = CollectionSpec(None, None, {"name": "legal"}, 3.0, embedding_source=None)
    store.ensure("b", bm25_only)
    assert store.ensure("b", bm25_only) == bm25_only
    with pytest.raises(ConflictError, match="embedding model"):
        store.ensure("b", SPEC)
    with pytest.raises(ConflictError, match="chunker"):
        store.ensure("c", CollectionSpec("m", DIM, {"name": "legal"}, 10.0))
    with pytest.raises(ConflictError, match="analyzer"):
        store.ensure("c", CollectionSpec("m", DIM, {"name": "window"}, 1.0, analyzer="x"))
    # the stored avg_doc_length wins: vectors already written used it
    assert store.ensure("c", CollectionSpec("m", DIM, {"name": "window"}, 99.0)) == SPEC
    assert [(i.name, i.points) for i in store.list_collections()] == [("b", 0), ("c", 0)]
    assert store.info("c").to_dict()["dimension"] == DIM
    store.delete("c")
    assert not store.exists("c") and [i.name for i in store.list_collections()] == ["b"]
    with pytest.raises(NotFoundError):
        store.delete("c")
    with pytest.raises(InvalidInputError):
        store.exists("bad name")


def test_points_round_trip(store):
    data = points(40)
    store.create("c", SPEC)
    assert store.upsert("c", data[:25]) == 25 and store.upsert("c", data[25:]) == 15
    assert store.upsert("c", []) == 0
    store.optimize("c")
    assert store.info("c").points == 40
    by_file = store.ids_by_file("c")
    assert by_file == {f"file{k}": {p.chunk_id for p in data[k::3]} for k in range(3)}
    read = {p.chunk_id: p for p in store.iter_points("c", page=7)}
    assert read.keys() == {p.chunk_id for p in data}
    for point in data:
        got = read[point.chunk_id]
        assert got.payload == point.payload
        assert got.sparse.indices == point.sparse.indices
        assert np.allclose(got.sparse.values, point.sparse.values, rtol=1e-6)
        unit = np.asarray(point.dense) / np.linalg.norm(point.dense)  # cosine stores unit vectors
        assert np.allclose(got.dense, unit, atol=1e-6)
    # an upsert of the same id replaces the point; deleting ids removes them
    changed = StoredPoint(data[0].chunk_id, {**data[0].payload, "text": "new"}, data[0].sparse)
    changed.dense = data[0].dense
    store.upsert("c", [changed])
    assert store.info("c").points == 40
    assert store.delete_chunks("c", [p.chunk_id for p in data[:10]]) == 10
    assert store.info("c").points == 30
    assert sum(map(len, store.ids_by_file("c").values())) == 30


def test_bm25_scores_are_qdrants_idf_formula(store):
    """score = sum over query terms in the document of IDF(N, df) * stored weight."""
    data = points(60, dense=False)
    store.create("c", CollectionSpec(None, None, {"name": "window"}, 10.0))
    store.upsert("c", data)
    store.optimize("c")
    df = Counter(t for p in data for t in p.sparse.indices)
    query = SparseVector([1, 7, 13, 42, 49], [1.0] * 5)
    expected = {}
    for p in data:
        weights = dict(zip(p.sparse.indices, p.sparse.values, strict=True))
        score = sum(idf(60, df[t]) * weights[t] for t in query.indices if t in weights)
        if score > 0:
            expected[p.chunk_id] = score
    hits = store.query("c", mode="bm25", limit=100, sparse=query)
    assert {h.chunk_id: h.score for h in hits} == pytest.approx(expected, rel=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # a query with no index term (only stop words) finds nothing; hybrid falls back to dense
    assert store.query("c", mode="bm25", limit=5, sparse=SparseVector([], [])) == []
    assert store.query("c", mode="hybrid", limit=5, sparse=Bm25Encoder.query_vector("the")) == []


def test_dense_search_is_exact_cosine(store):
    data = points(300)
    store.create("c", SPEC)
    store.upsert("c", data)
    store.optimize("c")
    matrix = np.stack([np.asarray(p.dense) / np.linalg.norm(p.dense) for p in data])
    rng = np.random.default_rng(5)
    for _ in range(5):
        query = rng.normal(size=DIM)
        cosine = matrix @ (query / np.linalg.norm(query))
        order = np.argsort(-cosine)[:20]
        hits = store.query("c", mode="dense", limit=20, dense=query.astype(np.float32))
        assert [h.chunk_id for h in hits] == [data[i].chunk_id for i in order]
        assert [h.score for h in hits] == pytest.approx(cosine[order].tolist(), abs=1e-5)
    with pytest.raises(InvalidInputError, match="query embedding"):
        store.query("c", mode="dense", limit=3)


def reference_rrf(branches, k, weights):
    scores = {}
    for branch, weight in zip(branches, weights, strict=True):
        for rank, hit in enumerate(branch):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1 / ((rank + 1) / weight + k - 1)
    return scores


def reference_dbsf(branches, weights):
    scores = {}
    for branch, weight in zip(branches, weights, strict=True):
        values = np.array([h.score for h in branch], dtype=np.float64)
        sd = values.std(ddof=1)
        low, high = values.mean() - 3 * sd, values.mean() + 3 * sd
        for hit, value in zip(branch, values, strict=True):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight * (value - low) / (
                high - low
            )
    return scores


FUSIONS = [
    FusionSpec(),
    FusionSpec(rrf_k=60),
    FusionSpec(rrf_k=10, weights=(0.4, 1.6)),
    FusionSpec(method="dbsf"),
    FusionSpec(method="dbsf", weights=(2.0, 0.5)),
    FusionSpec(rrf_k=2, weights=(1.0, 3.0), prefetch_limit=40),
]


@pytest.mark.parametrize("fusion", FUSIONS, ids=lambda f: f"{f.method}-{f.rrf_k}-{f.weights}")
def test_hybrid_fusion_formulas(store, fusion):
    data = points(200)
    store.create("c", SPEC)
    store.upsert("c", data)
    store.optimize("c")
    rng = np.random.default_rng(11)
    for _ in range(3):
        sparse = SparseVector(sorted(int(t) for t in rng.choice(50, 4, replace=False)), [1.0] * 4)
        dense = rng.normal(size=DIM).astype(np.float32)
        candidates = fusion.prefetch_limit or 15
        branches = [
            store.query("c", mode="bm25", limit=candidates, sparse=sparse),
            store.query("c", mode="dense", limit=candidates, dense=dense),
        ]
        if fusion.method == "rrf":
            expected = reference_rrf(branches, fusion.rrf_k, fusion.weights)
        else:
            expected = reference_dbsf(branches, fusion.weights)
        hits = store.query("c", mode="hybrid", limit=15, sparse=sparse, dense=dense, fusion=fusion)
        best = sorted(expected.values(), reverse=True)[:15]
        assert [h.score for h in hits] == pytest.approx(best, rel=1e-5)
        for hit in hits:
            assert expected[hit.chunk_id] == pytest.approx(hit.score, rel=1e-5)


def test_fusion_spec_validation():
    for bad in [
        {"method": "sum"},
        {"rrf_k": 0},
        {"rrf_k": 1.5},
        {"weights": (1.0,)},
        {"weights": (0.0, 1.0)},
        {"weights": (1.0, float("nan"))},
        {"prefetch_limit": 0},
    ]:
        with pytest.raises(InvalidInputError):
            FusionSpec(**bad)
    assert FusionSpec(weights=[2, 1]).weights == (2.0, 1.0)
    assert FusionSpec().is_default and not FusionSpec(rrf_k=60).is_default


def test_filters(store):
    data = points(90)
    store.create("c", SPEC)
    store.upsert("c", data)
    sparse = SparseVector(list(range(50)), [1.0] * 50)  # every point matches some term
    dense = np.ones(DIM, dtype=np.float32)

    def chunk_ids(**filters):
        found = {}
        for mode in ("bm25", "dense", "hybrid"):
            hits = store.query(
                "c", mode=mode, limit=200, sparse=sparse, dense=dense, filters=filters
            )
            found[mode] = {h.chunk_id for h in hits}
        assert found["bm25"] == found["dense"] == found["hybrid"]
        return found["bm25"]

    def expect(predicate):
        return {p.chunk_id for p in data if predicate(p.payload)}

    assert chunk_ids() == expect(lambda p: True)
    assert chunk_ids(kind="odd") == expect(lambda p: p["metadata"]["kind"] == "odd")
    # integers match given as numbers or digit strings; a list means any of them
    assert chunk_ids(n=3) == chunk_ids(n="3") == expect(lambda p: p["metadata"]["n"] == 3)
    assert chunk_ids(n=["1", 4]) == expect(lambda p: p["metadata"]["n"] in (1, 4))
    assert chunk_ids(tags="b") == expect(lambda p: True)  # list payloads match any item
    assert chunk_ids(source="doc2", kind="even") == expect(
        lambda p: p["source"] == "doc2" and p["metadata"]["kind"] == "even"
    )
    assert chunk_ids(file=["file0", "file2"]) == expect(lambda p: p["file"] != "file1")
    assert chunk_ids(kind="none") == set()
    assert chunk_ids(missing="x") == set()
    for bad in [{"n": 1.5}, {"n": True}, {"": "x"}, {".n": "x"}, {"n": []}, {"n": {"a": 1}}]:
        with pytest.raises(InvalidInputError, match="filter"):
            store.query("c", mode="bm25", limit=3, sparse=sparse, filters=bad)


def test_edge_indexes_filtered_fields_on_first_use(tmp_path):
    store = EdgeStore(tmp_path)
    try:
        store.create("c", SPEC)
        store.upsert("c", points(30))
        shard = store._shard("c")
        assert set(shard.info().payload_schema) == {"file", "source"}
        store.query(
            "c", mode="dense", limit=5, dense=np.ones(DIM), filters={"n": "2", "kind": "odd"}
        )
        schema = shard.info().payload_schema
        assert set(schema) == {"file", "source", "metadata.n", "metadata.kind"}
        assert str(schema["metadata.n"].data_type).endswith("Integer")
        assert str(schema["metadata.kind"].data_type).endswith("Keyword")
        assert schema["metadata.kind"].points == 30
    finally:
        store.close()


def test_query_batch_equals_single_queries(store):
    store.create("c", SPEC)
    store.upsert("c", points(120))
    rng = np.random.default_rng(3)
    queries = []
    for i in range(9):
        sparse = SparseVector(sorted(int(t) for t in rng.choice(50, 3, replace=False)), [1.0] * 3)
        dense = rng.normal(size=DIM).astype(np.float32)
        mode = ("bm25", "dense", "hybrid")[i % 3]
        fusion = FUSIONS[i % len(FUSIONS)]
        filters = {"kind": "odd"} if i % 2 else None
        queries.append(StoreQuery(mode, 10, sparse, dense, filters, fusion))
    batched = store.query_batch("c", queries)
    assert len(batched) == 9 and all(batched)
    for query, hits in zip(queries, batched, strict=True):
        single = store.query(
            "c",
            mode=query.mode,
            limit=query.limit,
            sparse=query.sparse,
            dense=query.dense,
            filters=query.filters,
            fusion=query.fusion,
        )
        assert [(h.chunk_id, h.score) for h in hits] == [(h.chunk_id, h.score) for h in single]
    assert store.query_batch("c", []) == []
    with pytest.raises(InvalidInputError, match="unknown mode"):
        store.query_batch("c", [StoreQuery("sparse", 3)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="limit"):
        store.query_batch("c", [StoreQuery("bm25", 0, queries[0].sparse)])


@pytest.mark.parametrize("kind", KINDS)
def test_data_survives_reopening(kind, tmp_path):
    reopen = {
        "edge": lambda: EdgeStore(tmp_path),
        "client": lambda: ClientStore.local(tmp_path),
    }[kind]
    store = reopen()
    store.create("c", SPEC)
    store.upsert("c", points(50))
    query = dict(
        mode="hybrid", limit=10, sparse=SparseVector([1, 2, 3], [1.0] * 3), dense=[1.0] * DIM
    )
    before = [(h.chunk_id, h.score) for h in store.query("c", **query)]
    ids = store.ids_by_file("c")
    store.close()
    store = reopen()
    try:
        assert store.spec("c") == SPEC and store.ids_by_file("c") == ids
        assert [(h.chunk_id, h.score) for h in store.query("c", **query)] == before
    finally:
        store.close()


def test_edge_directory_lock_and_interrupted_create(tmp_path):
    store = open_store(data_dir=tmp_path)
    assert isinstance(store, EdgeStore) and store.is_local
    with pytest.raises(ConflictError, match="in use by another finerank process"):
        open_store(data_dir=tmp_path)
    store.close()
    # a create killed before its metadata was written is invisible and gets replaced
    (tmp_path / "edge" / "c" / "segments").mkdir(parents=True)
    store = EdgeStore(tmp_path)
    try:
        assert not store.exists("c") and store.list_collections() == []
        store.create("c", SPEC)
        store.upsert("c", points(3))
        assert store.info("c").points == 3
    finally:
        store.close()
    # the temporary store deletes its directory on close
    memory = EdgeStore.temporary()
    root = memory.root
    memory.close()
    assert not root.exists()


def test_edge_rejects_vectors_that_do_not_fit(tmp_path):
    with EdgeStore(tmp_path) as store:
        store.create("c", SPEC)
        wrong = points(1)[0]
        wrong.dense = [1.0, 2.0]
        with pytest.raises(InvalidInputError, match="cannot write"):
            store.upsert("c", [wrong])
        with pytest.raises(InvalidInputError, match="cannot search"):
            store.query("c", mode="dense", limit=3, dense=[1.0, 2.0])


# --- both engines, same answers --------------------------------------------------------------


def test_engines_agree_on_laws(laws):
    """bm25 and dense: the same hits and scores (equal scores may cut differently)."""
    stores, queries = laws
    embedder = HashEmbedder()
    batch = []
    for text in queries:
        sparse, dense = Bm25Encoder.query_vector(text), embedder.embed_queries([text])[0]
        for mode in ("bm25", "dense"):
            batch.append(StoreQuery(mode, 30, sparse, dense))
            batch.append(StoreQuery(mode, 30, sparse, dense, {"law": "中华人民共和国数据安全法"}))
    edge, client = (stores[kind].query_batch("laws", batch) for kind in KINDS)
    assert sum(map(len, edge)) > len(batch) * 10
    for got, want in zip(edge, client, strict=True):
        assert_same_hits(got, want)


@pytest.mark.parametrize("fusion", FUSIONS, ids=lambda f: f"{f.method}-{f.rrf_k}-{f.weights}")
def test_engines_fuse_alike_on_laws(laws, fusion):
    """hybrid: each engine's hits are the formula over its two branches (equal branch scores
    ranked by chunk id), so both engines agree whenever their branches hold the same chunks
    (they may not when equal scores straddle a branch's cut)."""
    stores, queries = laws
    embedder = HashEmbedder()
    candidates = fusion.prefetch_limit or 20
    agreeing = 0
    for text in queries:
        sparse, dense = Bm25Encoder.query_vector(text), embedder.embed_queries([text])[0]
        fused, branches = {}, {}
        for kind, store in stores.items():
            branches[kind] = store.query_batch(
                "laws",
                [
                    StoreQuery("bm25", candidates, sparse),
                    StoreQuery("dense", candidates, None, dense),
                ],
            )
            fused[kind] = store.query(
                "laws", mode="hybrid", limit=20, sparse=sparse, dense=dense, fusion=fusion
            )
            if fusion.method == "rrf":
                expected = reference_rrf(branches[kind], fusion.rrf_k, fusion.weights)
            else:
                expected = reference_dbsf(branches[kind], fusion.weights)
            best = sorted(expected.values(), reverse=True)[:20]
            assert [h.score for h in fused[kind]] == pytest.approx(best, rel=1e-5)
        ids = {kind: [[h.chunk_id for h in b] for b in branches[kind]] for kind in KINDS}
        if ids["edge"] == ids["client"]:
            agreeing += 1
            assert_same_hits(fused["edge"], fused["client"])
    assert agreeing >= len(queries) * 2 // 3


def test_engines_agree_on_collection_contents(laws):
    stores, _ = laws
    edge, client = stores["edge"], stores["client"]
    assert edge.spec("laws") == client.spec("laws")
    assert edge.ids_by_file("laws") == client.ids_by_file("laws")
    left = {p.chunk_id: p for p in edge.iter_points("laws")}
    right = {p.chunk_id: p for p in client.iter_points("laws")}
    assert left.keys() == right.keys() and len(left) == 289
    for chunk, point in left.items():
        assert point.payload == right[chunk].payload
        assert point.sparse.indices == right[chunk].sparse.indices
        assert np.allclose(point.sparse.values, right[chunk].sparse.values, rtol=1e-6)
        assert np.allclose(point.dense, right[chunk].dense, atol=1e-6)
    assert point_id(chunk) == str(point_id(chunk))


@pytest.mark.parametrize("kind", KINDS)
def test_few_field_queries_follow_writes_and_deletes(kind, tmp_path):
    """A query for a hit's file and source (Edge answers it from memory) sees a point's new
    file after an upsert, and no deleted point."""
    store = make_store(kind, tmp_path / "s")
    try:
        data = points(12, dense=False)
        store.create("c", CollectionSpec(None, None, {"name": "t"}, 5.0))
        store.upsert("c", data)
        query = StoreQuery("bm25", 12, sparse=SparseVector(list(range(50)), [1.0] * 50))
        few = StoreQuery("bm25", 12, sparse=query.sparse, fields=("file", "source"))

        def files() -> dict[str, dict]:
            return {h.chunk_id: h.payload for h in store.query_batch("c", [few])[0]}

        expected = {p.chunk_id: {k: p.payload[k] for k in CACHED} for p in data}
        assert files() == expected
        assert files() == expected  # Edge: now from memory
        moved = StoredPoint(
            data[0].chunk_id, {**data[0].payload, "file": "renamed"}, data[0].sparse
        )
        store.upsert("c", [moved])
        store.delete_chunks("c", [data[1].chunk_id])
        expected[data[0].chunk_id]["file"] = "renamed"
        del expected[data[1].chunk_id]
        assert files() == expected
        full = store.query_batch("c", [query])[0]
        assert {h.chunk_id: h.payload["file"] for h in full} == {
            c: p["file"] for c, p in expected.items()
        }
        only_file = StoreQuery("bm25", 12, sparse=query.sparse, fields=("file",))
        assert {frozenset(h.payload) for h in store.query_batch("c", [only_file])[0]} == {
            frozenset({"chunk_id", "file"})
        }
    finally:
        store.close()


def test_an_unclosed_temporary_store_leaves_no_directory():
    import gc
    import subprocess
    import sys
    from pathlib import Path

    from finerank.retrieval.store.edge import EdgeStore

    store = EdgeStore.temporary()
    root = store.root
    assert root.is_dir()
    del store
    gc.collect()
    assert not root.exists()
    # and at interpreter exit, still referenced
    script = (
        "from finerank.retrieval.store.edge import EdgeStore\n"
        "store = EdgeStore.temporary()\n"
        "print(store.root)"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert not Path(printed.stdout.strip()).exists()
