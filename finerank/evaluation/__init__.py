"""Retrieval evaluation on BEIR-format data: first stage vs. reranked (``finerank eval``)."""

from finerank.evaluation.dataset import BeirDataset, load_beir
from finerank.evaluation.first_stage import Bm25sFirstStage, FirstStage
from finerank.evaluation.harness import METRICS, EvalReport, compute_metrics, evaluate_dataset

__all__ = [
    "METRICS",
    "BeirDataset",
    "Bm25sFirstStage",
    "EvalReport",
    "FirstStage",
    "compute_metrics",
    "evaluate_dataset",
    "load_beir",
]
