"""BM25 on Cranfield: Qdrant Edge returns the hits and scores of finerank's first store.

The first store was qdrant-client's local mode, which :class:`ClientStore.local` still is
(the same client calls); both engines apply Qdrant's IDF formula to the same stored vectors.
Every fifth query (45 of 225) keeps the local-mode side to a few seconds; the retrieval
benchmark compares all 225 (``benchmarks/bench_retrieval.py``).
"""

from __future__ import annotations

import json

from finerank.retrieval.chunkers import get_chunker
from finerank.retrieval.ingest import ingest
from finerank.retrieval.search import SearchService
from finerank.retrieval.store.client import ClientStore
from finerank.retrieval.store.edge import EdgeStore
from tests.retrieval.test_store import assert_same_hits


def test_edge_bm25_equals_the_first_store_on_cranfield(shared_data, tmp_path):
    root = shared_data / "cranfield"
    queries = [json.loads(line)["text"] for line in (root / "queries.jsonl").open()][::5]
    runs = {}
    for name, store in (("edge", EdgeStore(tmp_path)), ("local-mode", ClientStore.local())):
        with store:
            report = ingest(
                [root / "corpus.jsonl"],
                store=store,
                collection="cranfield",
                chunker=get_chunker("window"),
                batch_size=512,
                progress=False,
            )
            assert report.added == 1686
            runs[name] = SearchService(store).recall_batch(
                "cranfield", queries, mode="bm25", recall_k=100
            )
    assert len(queries) == 45
    for got, want in zip(runs["edge"], runs["local-mode"], strict=True):
        assert len(got) == 100
        assert_same_hits(got, want, rel=2e-6)
