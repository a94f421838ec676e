"""First-stage quality on Cranfield (1,400 aerodynamics abstracts, 225 queries, graded qrels).

BM25 (finerank's analyzer + Qdrant IDF), dense (the real all-MiniLM-L6-v2) and hybrid (RRF of
both, Qdrant's query API) run through embedded Qdrant over the whole corpus with all queries;
NDCG@10 (linear gain, as pytrec_eval/BEIR) and Recall@100 are printed and asserted.

Floors: each is the value measured when this test was written (see the README's retrieval
section) minus 0.03, a margin for tokenizer or float-order changes that should not move a
225-query mean further; a real regression (a broken analyzer, IDF or fusion) moves these
numbers by far more. The README reports the measured values.

Cost: embedding the corpus with MiniLM takes about 4 CPU-minutes; the document vectors are
kept in pytest's cache directory, keyed by the model files, the embedder code and the texts,
so later runs skip that step (delete ``.pytest_cache`` to recompute).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from finerank.retrieval.chunkers import get_chunker
from finerank.retrieval.ingest import ingest
from finerank.retrieval.search import SearchService
from finerank.retrieval.store import VectorStore

FLOORS = {  # mode: (NDCG@10, Recall@100) = measured (0.5155/0.7488, 0.4943/0.7856,
    # 0.5536/0.7979 with the default DBSF fusion) minus 0.03
    "bm25": (0.485, 0.718),
    "dense": (0.464, 0.755),
    "hybrid": (0.523, 0.767),
}


class CachedDocumentEmbedder:
    """Wraps an embedder; document vectors are read from / written to ``directory``."""

    def __init__(self, embedder, directory: Path):
        self.inner = embedder
        self.name, self.dimension, self.source = embedder.name, embedder.dimension, embedder.source
        files = sorted(p for p in Path(embedder.source).rglob("*") if p.is_file())
        digest = hashlib.sha256(inspect.getsource(type(embedder)).encode())
        for file in files:
            digest.update(file.name.encode() + file.read_bytes())
        self.model_key = digest.hexdigest()[:16]
        self.directory = directory

    def embed_documents(self, texts, *, dimensions=None):
        key = hashlib.sha256("\x00".join([self.model_key, *texts]).encode()).hexdigest()[:24]
        path = self.directory / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        vectors = self.inner.embed_documents(texts, dimensions=dimensions)
        np.save(path, vectors)
        return vectors


def ndcg_at(ranked: list[str], judged: dict[str, int], k: int = 10) -> float:
    gains = [judged.get(doc, 0) for doc in ranked[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted(judged.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], judged: dict[str, int], k: int = 100) -> float:
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


@pytest.fixture(scope="session")
def cranfield(shared_data, minilm, request):
    root = shared_data / "cranfield"
    cache = Path(request.config.cache.mkdir("finerank-cranfield-minilm"))
    store = VectorStore.memory()
    report = ingest(
        [root / "corpus.jsonl"],
        store=store,
        collection="cranfield",
        chunker=get_chunker("window"),
        embedder=CachedDocumentEmbedder(minilm, cache),
        batch_size=256,
        progress=False,
    )
    print(f"\ncranfield ingest: {report.summary()}")
    queries = [json.loads(line) for line in (root / "queries.jsonl").open(encoding="utf-8")]
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (root / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, grade = line.split("\t")
        qrels[query_id][doc_id] = int(grade)
    queries = [q for q in queries if q["_id"] in qrels]
    yield SimpleNamespace(
        store=store,
        service=SearchService(store, embedder=minilm),
        queries=queries,
        qrels=qrels,
        report=report,
    )
    store.close()


def _doc_ranking(hits) -> list[str]:
    ranked: list[str] = []
    for hit in hits:  # several windows of one abstract: the best one counts
        doc = hit.payload["source"].rsplit("#", 1)[1]
        if doc not in ranked:
            ranked.append(doc)
    return ranked


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_first_stage_quality(cranfield, mode):
    assert cranfield.report.documents == 1400 and len(cranfield.queries) == 225
    ndcg, recall = [], []
    runs = cranfield.service.recall_batch(
        "cranfield", [q["text"] for q in cranfield.queries], mode=mode, recall_k=100
    )
    for query, hits in zip(cranfield.queries, runs, strict=True):
        ranked = _doc_ranking(hits)
        ndcg.append(ndcg_at(ranked, cranfield.qrels[query["_id"]]))
        recall.append(recall_at(ranked, cranfield.qrels[query["_id"]]))
    mean_ndcg, mean_recall = float(np.mean(ndcg)), float(np.mean(recall))
    print(f"\ncranfield {mode}: NDCG@10 {mean_ndcg:.4f}  Recall@100 {mean_recall:.4f}")
    floor_ndcg, floor_recall = FLOORS[mode]
    assert mean_ndcg >= floor_ndcg
    assert mean_recall >= floor_recall
