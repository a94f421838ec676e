"""Several datasets x several first-stage modes in one evaluation (``finerank eval``).

Each dataset is indexed once; every mode then runs on that index (:func:`evaluate_modes`),
optionally reranked. An :class:`EvalSuite` holds the reports and writes them together:
``eval.json`` (every report, with per-query rows), ``eval.md`` (the table of every dataset,
mode and stage) and ``eval.png`` (each metric by mode, one panel per dataset).

Example:
    >>> from finerank.evaluation import load_beir
    >>> from finerank.evaluation.first_stage import ProductFirstStage
    >>> suite = EvalSuite(evaluate_modes(load_beir("stard").head(20), ProductFirstStage(),
    ...                                  ["bm25", "bm25+prf"]))  # doctest: +SKIP
    >>> [(row["dataset"], row["mode"], row["stage"]) for row in suite.rows()]  # doctest: +SKIP
    [('stard', 'bm25', 'first stage'), ('stard', 'bm25+prf', 'first stage')]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finerank.evaluation.dataset import BeirDataset
from finerank.evaluation.harness import (
    METRICS,
    EvalReport,
    evaluate_dataset,
    write_json_and_markdown,
)

LABELS = {
    "ndcg@10": "NDCG@10",
    "mrr@10": "MRR@10",
    "recall@10": "R@10",
    "recall@100": "R@100",
    "map": "MAP",
}


def evaluate_modes(
    dataset: BeirDataset,
    stage,
    modes: Sequence[str],
    *,
    progress: Callable[[str, int, int], None] | None = None,
    **options: Any,
) -> list[EvalReport]:
    """Index ``dataset`` once with ``stage`` (a
    :class:`~finerank.evaluation.first_stage.ProductFirstStage`) and evaluate each of
    ``modes`` on that index; ``options`` go to :func:`evaluate_dataset` (``reranker``,
    ``recall_k``, ``rerank_k``, ``instruction``, ``settings``). The first report's
    ``seconds["index"]`` is the indexing time of all of them. ``progress`` gets stage names
    prefixed with the dataset and mode."""
    started = time.perf_counter()
    stage.index(dataset.corpus, dataset.documents)
    indexed = time.perf_counter() - started
    reports = []
    for number, mode in enumerate(modes):
        label = f"{dataset.name} {mode}"
        report = evaluate_dataset(
            dataset,
            stage.for_mode(mode),
            index=False,
            progress=None if progress is None else _prefixed(progress, label),
            **options,
        )
        if number == 0:
            report.seconds = {"index": round(indexed, 3), **report.seconds}
        reports.append(report)
    return reports


def _prefixed(progress, label):
    return lambda stage, done, total: progress(f"{label}: {stage}", done, total)


@dataclass
class EvalSuite:
    """The reports of one ``finerank eval`` run, in run order."""

    reports: list[EvalReport]
    settings: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per dataset, mode and stage: ``{"dataset", "split", "queries", "mode",
        "stage": "first stage" | "reranked", metric: value...}``."""
        rows = []
        for report in self.reports:
            stages = [("first stage", report.first_stage)]
            if report.reranked is not None:
                stages.append(("reranked", report.reranked))
            for stage, metrics in stages:
                rows.append(
                    {
                        "dataset": report.dataset,
                        "split": report.split,
                        "queries": report.queries,
                        "mode": report.settings.get("first_stage"),
                        "stage": stage,
                        **{metric: metrics[metric] for metric in METRICS},
                    }
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """``{"settings", "table": rows(), "runs": [EvalReport.to_dict(), ...]}``."""
        return {
            "settings": self.settings,
            "table": self.rows(),
            "runs": [report.to_dict() for report in self.reports],
        }

    def to_markdown(self) -> str:
        """The table of every dataset, mode and stage, then each run's per-query table."""
        lines = ["# Evaluation", ""]
        lines += [
            "| dataset | mode | stage | " + " | ".join(LABELS[m] for m in METRICS) + " |",
            "|---|---|---|" + "---:|" * len(METRICS),
        ]
        for row in self.rows():
            dataset = f"{row['dataset']} ({row['split']}, {row['queries']} queries)"
            values = " | ".join(f"{row[m]:.4f}" for m in METRICS)
            lines.append(f"| {dataset} | {row['mode']} | {row['stage']} | {values} |")
        for report in self.reports:
            body = report.to_markdown().split("\n", 1)[1]
            lines += ["", f"## {report.dataset}: {report.settings.get('first_stage')}", body]
        return "\n".join(lines).rstrip("\n") + "\n"

    def plot(self, path: str | Path) -> Path:
        """``path`` (PNG): each metric by mode (bars; reranked stages hatched), one panel per
        dataset."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        datasets = list(dict.fromkeys(row["dataset"] for row in rows))
        figure, axes = plt.subplots(
            1, len(datasets), figsize=(max(6.0, 5.5 * len(datasets)), 4.2), squeeze=False
        )
        width = 0.8 / len(METRICS)
        colours = plt.get_cmap("tab10").colors
        for axis, dataset in zip(axes[0], datasets, strict=True):
            mine = [row for row in rows if row["dataset"] == dataset]
            labels = [
                row["mode"] + (" +rerank" if row["stage"] == "reranked" else "") for row in mine
            ]
            for m, metric in enumerate(METRICS):
                positions = [i + (m - (len(METRICS) - 1) / 2) * width for i in range(len(mine))]
                bars = axis.bar(
                    positions,
                    [row[metric] for row in mine],
                    width,
                    label=LABELS[metric],
                    color=colours[m % len(colours)],
                )
                for bar, row in zip(bars, mine, strict=True):
                    if row["stage"] == "reranked":
                        bar.set_hatch("//")
            axis.set_xticks(range(len(mine)), labels, rotation=20, ha="right")
            axis.set_ylim(0, 1)
            axis.set_title(f"{dataset} ({mine[0]['split']}, {mine[0]['queries']} queries)")
            axis.grid(axis="y", alpha=0.3)
        axes[0][0].set_ylabel("metric")
        handles, names = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, names, loc="lower center", ncol=len(METRICS), fontsize="small")
        figure.tight_layout(rect=(0, 0.07, 1, 1))
        target = Path(path)
        figure.savefig(target, dpi=110)
        plt.close(figure)
        return target

    def write(self, directory: str | Path, *, plot: bool = True) -> list[Path]:
        """Write ``eval.json``, ``eval.md`` and (``plot``) ``eval.png`` into ``directory``."""
        written = list(write_json_and_markdown(directory, self.to_dict(), self.to_markdown()))
        if plot:
            written.append(self.plot(Path(directory) / "eval.png"))
        return written
