"""``finerank batch rerank``: score millions of (query, document) pairs on a Ray cluster.

The input (Parquet file or directory, or JSONL) has ``query`` and ``document`` columns and
optional ``instruction`` and ``id`` columns; other columns are passed through. The driver
groups rows by (instruction, query) and cuts the groups into *parts* of about ``part_size``
pairs (a query is never split, so ranks are per query). Pending parts go through Ray Data
``map_batches`` on an actor pool (one model per actor); inside each part rows are ordered by
query, then by document length, so a batch shares its query prefix and packs tightly.

The output directory holds one ``part-NNNNN.parquet`` per part, written atomically when the
whole part is scored, plus ``_job.json`` (what the job is) and ``_SUCCESS.json`` (the
summary). A re-run with the same input and settings skips the parts already written, so an
interrupted job resumes without duplicates.

Example:
    >>> from finerank.settings import Settings
    >>> summary = batch_rerank("pairs.parquet", "scores/",
    ...                        Settings(model="/models/Qwen3-Reranker-0.6B"))  # doctest: +SKIP
    >>> summary.failures  # doctest: +SKIP
    0
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finerank.distributed.cluster import absolute_paths, ensure_ray, import_ray
from finerank.errors import ConflictError, InvalidInputError
from finerank.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

JOB_FILE = "_job.json"
SUCCESS_FILE = "_SUCCESS.json"
REQUIRED_COLUMNS = ("query", "document")
# Columns the driver adds; input files must not use them.
_PART, _ROW, _SECONDS = "_part", "_row", "_seconds"
RESULT_COLUMNS = ("score", "logit", "rank", "error")


# ---------------------------------------------------------------------------------------------
# Reading and checking the input
# ---------------------------------------------------------------------------------------------
def _input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _READERS)
        if not files:
            raise InvalidInputError(f"{path}: no .parquet or .jsonl files in this directory")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    if path.suffix not in _READERS:
        raise InvalidInputError(
            f"{path}: unknown input format {path.suffix!r} (use .parquet, .jsonl or .ndjson)"
        )
    return [path]


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _read_jsonl(path: Path) -> pa.Table:
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        return pj.read_json(path)
    except pa.ArrowInvalid as exc:
        raise InvalidInputError(f"{path}: not valid JSON Lines ({exc})") from None


_READERS: dict[str, Callable[[Path], Any]] = {
    ".parquet": _read_parquet,
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".json": _read_jsonl,
}


def read_pairs(path: str | os.PathLike[str]) -> pa.Table:
    """Read and check a pairs file (or a directory of them) into one Arrow table.

    ``query`` and ``document`` must be non-null strings; ``instruction`` may be null (the
    default instruction is used); ``id`` may be any type.

    Example:
        >>> read_pairs("pairs.jsonl").column_names  # doctest: +SKIP
        ['id', 'query', 'document']
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    tables = [_READERS[file.suffix](file) for file in _input_files(path)]
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowInvalid as exc:
        raise InvalidInputError(f"{path}: input files have incompatible columns ({exc})") from None
    for name in (_PART, _ROW, *RESULT_COLUMNS):
        if name in table.column_names:
            raise InvalidInputError(
                f"{path}: rename the input column {name!r} (finerank writes it)"
            )
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"{path}: missing column(s) {', '.join(missing)}; the input needs 'query' and "
            f"'document' (optional: 'instruction', 'id'); found {', '.join(table.column_names)}"
        )
    for name in ("query", "document", "instruction"):
        if name not in table.column_names:
            continue
        column = table[name]
        if pa.types.is_null(column.type) and name == "instruction":
            table = table.set_column(table.column_names.index(name), name, column.cast(pa.string()))
            continue
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise InvalidInputError(f"{path}: column {name!r} must hold strings, got {column.type}")
        if name != "instruction" and column.null_count:
            first = pc.index(pc.is_null(column), True).as_py()
            raise InvalidInputError(f"{path}: row {first} has no {name} (null)")
    return table


# ---------------------------------------------------------------------------------------------
# Planning: groups of one query, parts of whole groups
# ---------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """Rows of each part (grouped by query, longest documents first) and group numbers."""

    order: np.ndarray  # row numbers, part after part
    bounds: list[int]  # part p is order[bounds[p]:bounds[p + 1]]
    group_of_row: np.ndarray  # group number (first-appearance order) of every input row

    @property
    def num_parts(self) -> int:
        return len(self.bounds) - 1

    def rows(self, part: int) -> np.ndarray:
        return self.order[self.bounds[part] : self.bounds[part + 1]]


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Integer code of each value, numbered by first appearance (null -> -1)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def plan_parts(table: pa.Table, part_size: int) -> _Plan:
    """Cut the rows into parts of whole query groups of about ``part_size`` pairs.

    Deterministic for a given input, so a re-run finds the same parts.

    Example:
        >>> import pyarrow as pa
        >>> t = pa.table({"query": ["a", "b", "a"], "document": ["x", "yy", "zzz"]})
        >>> plan = plan_parts(t, part_size=2)
        >>> [plan.rows(p).tolist() for p in range(plan.num_parts)]
        [[2, 0], [1]]
    """
    import pyarrow.compute as pc

    if part_size < 1:
        raise InvalidInputError(f"part_size must be >= 1, got {part_size}")
    n = table.num_rows
    if n == 0:
        return _Plan(np.zeros(0, np.int64), [0], np.zeros(0, np.int64))
    key = _codes(table["query"])
    if "instruction" in table.column_names:
        key = key * (int(_codes(table["instruction"]).max()) + 2) + _codes(table["instruction"]) + 1
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    # np.unique numbers groups by key; renumber them by first appearance in the input.
    renumber = np.empty(len(first), np.int64)
    renumber[np.argsort(first, kind="stable")] = np.arange(len(first))
    group = renumber[inverse.reshape(-1)]
    lengths = pc.utf8_length(table["document"]).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.arange(n, dtype=np.int64)
    order = np.lexsort((rows, -lengths, group))  # by group, longest document first
    sizes = np.bincount(group)
    bounds, filled = [0], 0
    for size in sizes:
        filled += int(size)
        if filled - bounds[-1] >= part_size:
            bounds.append(filled)
    if bounds[-1] != n:
        bounds.append(n)
    return _Plan(order=order, bounds=bounds, group_of_row=group)


# ---------------------------------------------------------------------------------------------
# The actor: one model, scores batches of rows
# ---------------------------------------------------------------------------------------------
class PairScorer:
    """Ray Data callable class: loads the model once, scores ``pyarrow`` batches.

    When the model's kernels compile (bf16 on CPU, see :mod:`finerank.models.fused`), the
    actor warms up once at start like a server (:meth:`ScoringEngine.warm_up`, logged), so no
    batch pays for compiling.

    Consecutive rows with the same (instruction, query) are prepared together so the
    engine computes the shared prefix once; all groups of a batch go through one packed run.
    A batch that fails is retried group by group, then pair by pair, so one bad pair costs
    one ``error`` row, never the job.
    """

    def __init__(self, settings: Settings, max_tokens_per_doc: int | None = None, *, reranker=None):
        self.settings = settings
        self.max_tokens_per_doc = max_tokens_per_doc
        # ``reranker``: an already loaded model (in-process use); Ray actors load their own.
        if reranker is None:
            from finerank.runtime import Runtime

            reranker = Runtime(settings).reranker()
        self.reranker = reranker
        reranker.engine.warm_up()

    def _score_groups(self, groups: Sequence[tuple[str, str | None, list[str]]]) -> list[float]:
        engine = self.reranker.engine
        prepared = [
            engine.prepare(
                query,
                documents,
                instruction=instruction,
                long_document=self.settings.long_document,
                max_tokens_per_doc=self.max_tokens_per_doc,
            )
            for query, instruction, documents in groups
        ]
        logits = engine.run([item for p in prepared for item in p.items])
        out: list[float] = []
        start = 0
        for p in prepared:
            out.extend(r.logit for r in p.collect(logits[start : start + len(p.items)]))
            start += len(p.items)
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        started = time.perf_counter()
        queries = batch["query"].to_pylist()
        documents = batch["document"].to_pylist()
        default = self.settings.instruction
        if "instruction" in batch.column_names:
            instructions = [
                i if i is not None else default for i in batch["instruction"].to_pylist()
            ]
        else:
            instructions = [default] * len(queries)
        groups: list[tuple[str, str | None, list[str]]] = []
        for query, instruction, document in zip(queries, instructions, documents, strict=True):
            if groups and groups[-1][0] == query and groups[-1][1] == instruction:
                groups[-1][2].append(document)
            else:
                groups.append((query, instruction, [document]))
        logits: list[float] = []
        errors: list[str | None] = []
        try:
            logits = self._score_groups(groups)
            errors = [None] * len(logits)
        except Exception:  # noqa: BLE001 - isolate the failing pair below
            for group in groups:
                for document in group[2]:
                    try:
                        logits.extend(self._score_groups([(group[0], group[1], [document])]))
                        errors.append(None)
                    except Exception as exc:  # noqa: BLE001 - recorded in the output
                        logits.append(math.nan)
                        errors.append(f"{type(exc).__name__}: {exc}"[:500])
        logit_array = np.asarray(logits, dtype=np.float64)
        with np.errstate(over="ignore"):
            scores = 1.0 / (1.0 + np.exp(-logit_array))
        return pa.table(
            {
                _PART: batch[_PART],
                _ROW: batch[_ROW],
                "score": pa.array(scores, pa.float64()),
                "logit": pa.array(logit_array, pa.float64()),
                "error": pa.array(errors, pa.string()),
                # The batch's compute time spread over its rows, summed up by the driver.
                _SECONDS: pa.array(
                    np.full(len(logits), (time.perf_counter() - started) / max(1, len(logits)))
                ),
            }
        )


# ---------------------------------------------------------------------------------------------
# Job bookkeeping
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """Reported after every finished part."""

    parts_done: int
    parts_total: int
    pairs_done: int
    pairs_total: int
    elapsed_s: float
    pairs_per_second: float


@dataclass(frozen=True)
class BatchRerankSummary:
    """What a run did. ``pairs_per_second`` counts pairs scored in this run over its wall
    time (Ray start-up, model loading and warm-up included); ``actor_seconds`` is the time actors
    spent inside the model, so ``pairs_per_actor_second`` is the speed of one replica."""

    output: str
    pairs: int
    queries: int
    parts: int
    parts_skipped: int
    pairs_scored: int
    failures: int
    seconds: float
    pairs_per_second: float
    actor_seconds: float
    pairs_per_actor_second: float


def part_path(out: Path, part: int) -> Path:
    return out / f"part-{part:05d}.parquet"


def _fingerprint(path: Path) -> list[list[Any]]:
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in _input_files(path)]


def _job_description(
    path: Path, table: pa.Table, plan: _Plan, settings: Settings, options: dict[str, Any]
) -> dict[str, Any]:
    scoring = (
        "model",
        "family",
        "dtype",
        "max_length",
        "instruction",
        "long_document",
        "chunk_overlap",
        "quantize",
    )
    return {
        "kind": "finerank batch rerank",
        "input": _fingerprint(path),
        "rows": table.num_rows,
        "parts": plan.num_parts,
        "settings": {name: getattr(settings, name) for name in scoring},
        "options": options,
    }


def _prepare_output(out: Path, job: dict[str, Any], overwrite: bool) -> None:
    job_file = out / JOB_FILE
    if overwrite and out.exists():
        for file in out.glob("part-*.parquet"):
            file.unlink()
        for name in (JOB_FILE, SUCCESS_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".part-*.tmp"):  # a part being written when the last run died
        stale.unlink()
    if job_file.exists():
        previous = json.loads(job_file.read_text(encoding="utf-8"))
        if previous != job:
            differ = sorted(k for k in job if previous.get(k) != job[k])
            raise ConflictError(
                f"{out} holds a job with another input or settings (differs in: "
                f"{', '.join(differ)}); pass --overwrite to start over, or use another output"
            )
    elif any(out.glob("part-*.parquet")):
        raise ConflictError(f"{out} holds part files but no {JOB_FILE}; use an empty directory")
    else:
        job_file.write_text(json.dumps(job, indent=2), encoding="utf-8")


def _write_part(
    out: Path,
    part: int,
    table: pa.Table,
    plan: _Plan,
    logits: np.ndarray,
    errors: list[str | None],
    keep_documents: bool,
) -> int:
    """Join the part's scores to its input rows, rank per query, write atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = np.sort(plan.rows(part))
    order = np.argsort(np.searchsorted(rows, plan.rows(part)))  # part order -> row order
    logits = logits[order]
    errors = [errors[i] for i in order]
    groups = plan.group_of_row[rows]
    # Rank like Reranker.rerank: best logit first, ties by input order; failures last.
    sort_logit = np.where(np.isnan(logits), np.inf, -logits)
    ranked = np.lexsort((rows, sort_logit, groups))
    group_start = np.searchsorted(groups[ranked], groups[ranked], side="left")
    rank = np.empty(len(rows), np.int64)
    rank[ranked] = np.arange(len(rows)) - group_start + 1
    columns = [c for c in table.column_names if keep_documents or c != "document"]
    result = table.select(columns).take(pa.array(rows))
    with np.errstate(over="ignore"):
        scores = 1.0 / (1.0 + np.exp(-logits))
    result = result.append_column(_ROW, pa.array(rows))
    result = result.append_column("score", pa.array(scores, pa.float64()))
    result = result.append_column("logit", pa.array(logits, pa.float64()))
    rank_array = pa.array(rank, mask=np.isnan(logits))
    result = result.append_column("rank", rank_array)
    result = result.append_column("error", pa.array(errors, pa.string()))
    result = result.take(pa.array(ranked))  # per query, best first
    tmp = out / f".{part_path(out, part).name}.tmp"
    pq.write_table(result, tmp)
    os.replace(tmp, part_path(out, part))
    return int(np.isnan(logits).sum())


def _count_failures(path: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    errors = pq.read_table(path, columns=["error"])["error"]
    return int(pc.sum(pc.is_valid(errors)).as_py() or 0)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------
def batch_rerank(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    settings: Settings,
    *,
    part_size: int = 10_000,
    batch_size: int = 256,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    max_tokens_per_doc: int | None = None,
    keep_documents: bool = False,
    overwrite: bool = False,
    ray_address: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> BatchRerankSummary:
    """Score every pair of ``input_path`` into ``output_dir`` (resumable); see the module doc.

    ``actors`` models run in parallel, each with ``cpus_per_actor`` CPUs and
    ``gpus_per_actor`` GPUs (fractions share a GPU). ``batch_size`` rows go to an actor at a
    time (the engine packs them under ``settings.max_batch_tokens``).

    Example:
        >>> batch_rerank("pairs.jsonl", "out/", Settings(model="/models/r"), actors=4,
        ...              gpus_per_actor=1).pairs_per_second  # doctest: +SKIP
        5123.4
    """
    started = time.perf_counter()
    for name, value in (("batch_size", batch_size), ("actors", actors)):
        if value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
    if gpus_per_actor < 0 or cpus_per_actor <= 0:
        raise InvalidInputError("cpus_per_actor must be > 0 and gpus_per_actor >= 0")
    if not settings.model:
        raise InvalidInputError("no model: pass --model DIR (or set FINERANK_MODEL)")
    if gpus_per_actor > 0 and settings.device == "auto":
        settings = settings.model_copy(update={"device": "cuda"})
    settings = absolute_paths(settings)
    path, out = Path(input_path), Path(output_dir)
    table = read_pairs(path)
    plan = plan_parts(table, part_size)
    options = {
        "part_size": part_size,
        "max_tokens_per_doc": max_tokens_per_doc,
        "keep_documents": keep_documents,
    }
    _prepare_output(out, _job_description(path, table, plan, settings, options), overwrite)

    done = [p for p in range(plan.num_parts) if part_path(out, p).exists()]
    pending = [p for p in range(plan.num_parts) if p not in set(done)]
    pairs_done = sum(len(plan.rows(p)) for p in done)
    failures = sum(_count_failures(part_path(out, p)) for p in done)
    scored, actor_seconds = 0, 0.0
    if pending:
        actor_seconds, scored, new_failures = _run_pending(
            table,
            plan,
            pending,
            out,
            settings,
            batch_size=batch_size,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
            max_tokens_per_doc=max_tokens_per_doc,
            keep_documents=keep_documents,
            ray_address=ray_address,
            progress=progress,
            parts_done=len(done),
            pairs_done=pairs_done,
            started=started,
        )
        failures += new_failures
    seconds = time.perf_counter() - started
    summary = BatchRerankSummary(
        output=str(out),
        pairs=table.num_rows,
        queries=int(plan.group_of_row.max()) + 1 if table.num_rows else 0,
        parts=plan.num_parts,
        parts_skipped=len(done),
        pairs_scored=scored,
        failures=failures,
        seconds=round(seconds, 3),
        pairs_per_second=round(scored / seconds, 1) if seconds > 0 else 0.0,
        actor_seconds=round(actor_seconds, 3),
        pairs_per_actor_second=round(scored / actor_seconds, 1) if actor_seconds else 0.0,
    )
    (out / SUCCESS_FILE).write_text(json.dumps(asdict(summary), indent=2), encoding="utf-8")
    return summary


def _run_pending(
    table: pa.Table,
    plan: _Plan,
    pending: list[int],
    out: Path,
    settings: Settings,
    *,
    batch_size: int,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    max_tokens_per_doc: int | None,
    keep_documents: bool,
    ray_address: str | None,
    progress: Callable[[Progress], None] | None,
    parts_done: int,
    pairs_done: int,
    started: float,
) -> tuple[float, int, int]:
    """Score the pending parts; write each when complete. Returns (seconds actors spent
    scoring, pairs scored, failures)."""
    import pyarrow as pa

    ensure_ray(ray_address)
    ray = import_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # finerank reports progress per part instead

    columns = [c for c in ("query", "document", "instruction") if c in table.column_names]
    blocks = []
    for part in pending:
        rows = plan.rows(part)
        block = table.select(columns).take(pa.array(rows))
        block = block.append_column(_PART, pa.array(np.full(len(rows), part, np.int64)))
        blocks.append(block.append_column(_ROW, pa.array(rows)))
    dataset = ray.data.from_arrow(blocks).map_batches(
        PairScorer,
        fn_constructor_kwargs={"settings": settings, "max_tokens_per_doc": max_tokens_per_doc},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
    )
    # Where each row sits inside its part (part order), to fill the part's arrays.
    position = np.empty(table.num_rows, np.int64)
    for part in pending:
        rows = plan.rows(part)
        position[rows] = np.arange(len(rows))
    logits = {p: np.full(len(plan.rows(p)), np.nan) for p in pending}
    errors: dict[int, list[str | None]] = {p: [None] * len(plan.rows(p)) for p in pending}
    seen = {p: np.zeros(len(plan.rows(p)), bool) for p in pending}
    remaining = {p: len(plan.rows(p)) for p in pending}
    actor_seconds = 0.0
    scored = failures = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        actor_seconds += float(np.sum(batch[_SECONDS].to_numpy()))
        parts = batch[_PART].to_numpy()
        rows = batch[_ROW].to_numpy()
        batch_logits = batch["logit"].to_numpy(zero_copy_only=False)
        batch_errors = batch["error"].to_pylist()
        for part in np.unique(parts):
            part = int(part)
            mask = parts == part
            where = position[rows[mask]]
            fresh = ~seen[part][where]  # a retried block must not count twice
            where = where[fresh]
            seen[part][where] = True
            logits[part][where] = batch_logits[mask][fresh]
            for i, error in zip(
                where, np.asarray(batch_errors, dtype=object)[mask][fresh], strict=True
            ):
                errors[part][i] = error
            remaining[part] -= len(where)
            if remaining[part] == 0:
                failures += _write_part(
                    out, part, table, plan, logits.pop(part), errors.pop(part), keep_documents
                )
                scored += len(plan.rows(part))
                parts_done += 1
                pairs_done += len(plan.rows(part))
                if progress is not None:
                    elapsed = time.perf_counter() - started
                    progress(
                        Progress(
                            parts_done,
                            plan.num_parts,
                            pairs_done,
                            table.num_rows,
                            elapsed,
                            scored / elapsed if elapsed else 0.0,
                        )
                    )
    if any(remaining.values()):  # pragma: no cover - Ray Data lost rows without an error
        missing = sorted(p for p, n in remaining.items() if n)
        raise RuntimeError(f"parts {missing} did not get all their scores; re-run to resume")
    return actor_seconds, scored, failures
