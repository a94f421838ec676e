"""Evaluate a first stage, and a reranker on top of it, on a BEIR-format dataset.

Metrics come from ``ranx`` (NDCG@10, MRR@10, Recall@10, Recall@100, MAP), computed on the
first-stage ranking and on the reranked one (the first ``rerank_k`` candidates reordered by
the reranker, the rest kept in first-stage order below them).

Example:
    >>> from finerank.evaluation import evaluate_dataset, load_beir, Bm25sFirstStage
    >>> report = evaluate_dataset(load_beir("../shared/data/cranfield"), Bm25sFirstStage())
    ... # doctest: +SKIP
    >>> round(report.first_stage["ndcg@10"], 3)  # doctest: +SKIP
    0.498
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finerank.errors import InvalidInputError
from finerank.evaluation.dataset import BeirDataset
from finerank.evaluation.first_stage import FirstStage, Ranking
from finerank.retrieval.head import RerankHead

if TYPE_CHECKING:
    from finerank.retrieval.search import SupportsRerank

METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "map")
TOP_IDS = 10  # doc ids kept per query and stage in the per-query rows
SEARCH_BATCH = 16  # queries per first-stage call (progress granularity)


@dataclass
class EvalReport:
    """Mean metrics per stage and one row per query (see :meth:`to_dict` for the layout)."""

    dataset: str
    split: str
    queries: int
    settings: dict[str, Any]
    first_stage: dict[str, float]
    reranked: dict[str, float] | None
    per_query: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"dataset", "split", "queries", "settings", "first_stage": {metric: value},
        "reranked": {...} (only with a reranker), "seconds", "per_query": [...]}``."""
        payload: dict[str, Any] = {
            "dataset": self.dataset,
            "split": self.split,
            "queries": self.queries,
            "settings": self.settings,
            "first_stage": self.first_stage,
        }
        if self.reranked is not None:
            payload["reranked"] = self.reranked
        payload["seconds"] = self.seconds
        payload["per_query"] = self.per_query
        return payload

    def summary_rows(self) -> list[tuple[str, float, float | None, float | None]]:
        """(metric, first stage, reranked, delta) for every metric."""
        rows = []
        for metric in METRICS:
            base = self.first_stage[metric]
            after = self.reranked[metric] if self.reranked is not None else None
            rows.append((metric, base, after, None if after is None else after - base))
        return rows

    def to_markdown(self) -> str:
        """A summary table (first stage, reranked, delta) then the per-query NDCG@10 table."""
        s = self.settings
        lines = [
            f"# Evaluation: {self.dataset} ({self.split}, {self.queries} queries)",
            "",
            f"First stage: `{s.get('first_stage')}` (recall_k={s.get('recall_k')})"
            + (f", embedding model `{s['embedding_model']}`" if s.get("embedding_model") else ""),
            f"Reranker: `{s['model']}` on the top {s.get('rerank_k')}"
            if s.get("model")
            else "Reranker: none (first stage only)",
            "",
        ]
        if self.reranked is None:
            lines += ["| metric | first stage |", "|---|---:|"]
            lines += [f"| {m} | {b:.4f} |" for m, b, _, _ in self.summary_rows()]
        else:
            lines += ["| metric | first stage | reranked | delta |", "|---|---:|---:|---:|"]
            lines += [
                f"| {m} | {b:.4f} | {a:.4f} | {d:+.4f} |" for m, b, a, d in self.summary_rows()
            ]
        lines += ["", "## Per query (NDCG@10)", ""]
        if self.reranked is None:
            lines += ["| query | first stage | text |", "|---|---:|---|"]
            for row in self.per_query:
                lines.append(
                    f"| {row['query_id']} | {row['first_stage']['ndcg@10']:.4f} "
                    f"| {_cell(row['query'])} |"
                )
        else:
            lines += [
                "| query | first stage | reranked | delta | text |",
                "|---|---:|---:|---:|---|",
            ]
            for row in self.per_query:
                base, after = row["first_stage"]["ndcg@10"], row["reranked"]["ndcg@10"]
                lines.append(
                    f"| {row['query_id']} | {base:.4f} | {after:.4f} | {after - base:+.4f} "
                    f"| {_cell(row['query'])} |"
                )
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``eval.json`` and ``eval.md`` into ``directory`` (created)."""
        return write_json_and_markdown(directory, self.to_dict(), self.to_markdown())


def write_json_and_markdown(
    directory: str | Path, payload: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """``directory``/eval.json (``payload``) and ``directory``/eval.md (``markdown``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "eval.json", out / "eval.md"
    json_path.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rank_scores(doc_ids: Sequence[str]) -> dict[str, float]:
    """Scores that make ranx see exactly this order (raw scores may tie)."""
    total = len(doc_ids)
    return {doc_id: float(total - position) for position, doc_id in enumerate(doc_ids)}


def compute_metrics(
    qrels: dict[str, dict[str, int]], rankings: dict[str, Sequence[str]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query :data:`METRICS` (ranx) of ranked doc-id lists.

    A query with no candidate at all scores 0 on every metric.

    Example:
        >>> compute_metrics({"q": {"d1": 1}}, {"q": ["d2", "d1"]})[0]["mrr@10"]
        0.5
    """
    from ranx import Qrels, Run, evaluate

    run_dict = {}
    for query_id in qrels:
        ids = list(rankings.get(query_id, ()))
        # ranx drops queries with an empty ranking; a sentinel id keeps them (scored 0).
        run_dict[query_id] = rank_scores(ids) if ids else {"\x00no-candidate": 0.0}
    qrels_obj, run_obj = Qrels(qrels), Run(run_dict)
    means = evaluate(qrels_obj, run_obj, list(METRICS), make_comparable=True)
    per_query_values = evaluate(
        qrels_obj, run_obj, list(METRICS), return_mean=False, make_comparable=True
    )
    query_ids = list(run_obj.keys())
    per_query = {
        query_id: {m: float(per_query_values[m][i]) for m in METRICS}
        for i, query_id in enumerate(query_ids)
    }
    return {m: float(means[m]) for m in METRICS}, per_query


def evaluate_dataset(
    dataset: BeirDataset,
    first_stage: FirstStage,
    *,
    reranker: SupportsRerank | None = None,
    recall_k: int = 100,
    rerank_k: int = 100,
    instruction: str | None = None,
    settings: dict[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    index: bool = True,
) -> EvalReport:
    """Index the corpus, retrieve ``recall_k`` per query, optionally rerank the top
    ``rerank_k``, and score both rankings. ``progress(stage, done, total)`` reports the
    ``"first stage"`` and ``"reranking"`` stages query by query. ``index=False``: the stage
    already holds this corpus (another mode of one index, see :func:`evaluate_modes`)."""
    import time

    if recall_k < 1 or rerank_k < 1:
        raise InvalidInputError(f"recall_k and rerank_k must be >= 1 (got {recall_k}, {rerank_k})")
    seconds: dict[str, float] = {}
    if index:
        started = time.perf_counter()
        first_stage.index(dataset.corpus, dataset.documents)
        seconds["index"] = time.perf_counter() - started
    started = time.perf_counter()
    retrieved: dict[str, Ranking] = {}
    query_items = list(dataset.queries.items())
    for first in range(0, len(query_items), SEARCH_BATCH):
        batch = dict(query_items[first : first + SEARCH_BATCH])
        retrieved.update(first_stage.search(batch, recall_k))
        if progress is not None:
            progress("first stage", len(retrieved), len(query_items))
    seconds["first_stage"] = time.perf_counter() - started
    base_ids = {q: [doc_id for doc_id, _ in retrieved.get(q, [])] for q in dataset.queries}

    reranked_ids: dict[str, list[str]] | None = None
    if reranker is not None:
        reranked_ids = {}
        started = time.perf_counter()
        total = len(dataset.queries)
        for done, (query_id, query) in enumerate(dataset.queries.items(), start=1):
            head = RerankHead(base_ids[query_id], rerank_k, dataset.corpus.__getitem__)
            results = (
                reranker.rerank(query, head.texts, instruction=instruction) if head.texts else []
            )
            reranked_ids[query_id] = head.reorder(results)
            if progress is not None:
                progress("reranking", done, total)
        seconds["rerank"] = time.perf_counter() - started

    base_mean, base_per_query = compute_metrics(dataset.qrels, base_ids)
    rerank_mean, rerank_per_query = (None, None)
    if reranked_ids is not None:
        rerank_mean, rerank_per_query = compute_metrics(dataset.qrels, reranked_ids)

    rows = []
    for query_id, query in dataset.queries.items():
        row: dict[str, Any] = {
            "query_id": query_id,
            "query": query,
            "relevant": len(dataset.qrels[query_id]),
            "first_stage": base_per_query[query_id],
            "first_stage_top": base_ids[query_id][:TOP_IDS],
        }
        if reranked_ids is not None and rerank_per_query is not None:
            row["reranked"] = rerank_per_query[query_id]
            row["reranked_top"] = reranked_ids[query_id][:TOP_IDS]
        rows.append(row)
    return EvalReport(
        dataset=dataset.name,
        split=dataset.split,
        queries=len(dataset.queries),
        settings={
            "first_stage": first_stage.name,
            "recall_k": recall_k,
            "rerank_k": rerank_k if reranker is not None else None,
            "instruction": instruction,
            **(settings or {}),
        },
        first_stage=base_mean,
        reranked=rerank_mean,
        per_query=rows,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )
