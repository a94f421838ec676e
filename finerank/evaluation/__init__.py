"""Retrieval evaluation on BEIR-format data: first stages vs. reranked (``finerank eval``)."""

from finerank.evaluation.dataset import SHIPPED, BeirDataset, load_beir
from finerank.evaluation.first_stage import Bm25sFirstStage, FirstStage
from finerank.evaluation.harness import METRICS, EvalReport, compute_metrics, evaluate_dataset
from finerank.evaluation.suite import EvalSuite, evaluate_modes

__all__ = [
    "METRICS",
    "SHIPPED",
    "BeirDataset",
    "Bm25sFirstStage",
    "EvalReport",
    "EvalSuite",
    "FirstStage",
    "compute_metrics",
    "evaluate_dataset",
    "evaluate_modes",
    "load_beir",
]
