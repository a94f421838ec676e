from __future__ import annotations

import math

import pytest

from finerank.evaluation import METRICS, compute_metrics, evaluate_dataset, load_beir
from finerank.evaluation.first_stage import Bm25sFirstStage, make_first_stage


def test_metrics_follow_the_given_order():
    qrels = {"q": {"d1": 1}, "r": {"x": 2, "y": 1}}
    means, per_query = compute_metrics(qrels, {"q": ["d2", "d1"], "r": []})
    assert per_query["q"]["mrr@10"] == pytest.approx(0.5)
    assert per_query["q"]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert per_query["q"]["recall@10"] == pytest.approx(1.0)
    # a query with no candidates counts, with zeros
    assert all(per_query["r"][m] == 0.0 for m in METRICS)
    assert means["mrr@10"] == pytest.approx(0.25)
    # same documents, other order: the metrics see the order, not raw scores
    _, swapped = compute_metrics(qrels, {"q": ["d1", "d2"], "r": []})
    assert swapped["q"]["mrr@10"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def cranfield_bm25(shared_data):
    dataset = load_beir(shared_data / "cranfield")
    return evaluate_dataset(dataset, make_first_stage("bm25"))


def test_cranfield_bm25_matches_the_published_baseline(cranfield_bm25):
    """A plain BM25 gets NDCG@10 about 0.48 on Cranfield: the harness measures correctly."""
    report = cranfield_bm25
    assert report.queries == 225 and report.reranked is None
    assert 0.44 <= report.first_stage["ndcg@10"] <= 0.56
    assert 0.70 <= report.first_stage["mrr@10"] <= 0.85
    assert 0.65 <= report.first_stage["recall@100"] <= 0.80
    assert report.first_stage["recall@10"] <= report.first_stage["recall@100"]
    assert len(report.per_query) == 225
    mean = sum(row["first_stage"]["ndcg@10"] for row in report.per_query) / 225
    assert mean == pytest.approx(report.first_stage["ndcg@10"])


def test_product_bm25_agrees_with_reference_bm25(shared_data, cranfield_bm25):
    """finerank's BM25 and the bm25s package agree closely on the top documents."""
    dataset = load_beir(shared_data / "cranfield").head(40)
    reference = evaluate_dataset(dataset, Bm25sFirstStage(), recall_k=10)
    ours = {row["query_id"]: row["first_stage_top"] for row in cranfield_bm25.per_query[:40]}
    overlap = [
        len(set(ours[row["query_id"]]) & set(row["first_stage_top"])) / 10
        for row in reference.per_query
    ]
    assert sum(overlap) / len(overlap) >= 0.6


def test_reranking_reorders_only_the_top_k(shared_data, qwen3_reranker):
    dataset = load_beir(shared_data / "cranfield").head(3)
    stage = Bm25sFirstStage()
    report = evaluate_dataset(
        dataset, stage, reranker=qwen3_reranker, recall_k=30, rerank_k=8, instruction="Find it"
    )
    assert report.reranked is not None and set(report.reranked) == set(METRICS)
    # recall@100 only sees the candidate set, which reranking does not change
    assert report.reranked["recall@100"] == pytest.approx(report.first_stage["recall@100"])
    for row in report.per_query:
        head = stage.search({row["query_id"]: dataset.queries[row["query_id"]]}, 30)[
            row["query_id"]
        ]
        head_ids = [doc_id for doc_id, _ in head]
        expected = qwen3_reranker.rerank(
            dataset.queries[row["query_id"]],
            [dataset.corpus[d] for d in head_ids[:8]],
            instruction="Find it",
        )
        assert row["reranked_top"][:8] == [head_ids[r.index] for r in expected]
        assert row["reranked_top"][8:] == head_ids[8:10]
        assert row["first_stage_top"] == head_ids[:10]


def test_bad_k_is_rejected(small_beir):
    with pytest.raises(ValueError, match="recall_k"):
        evaluate_dataset(load_beir(small_beir), Bm25sFirstStage(), recall_k=0)
