"""``finerank batch rerank``: Ray Data scores equal in-process scores; interrupted jobs resume."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from finerank.distributed.batch_rerank import (
    JOB_FILE,
    SUCCESS_FILE,
    PairScorer,
    batch_rerank,
    part_path,
    plan_parts,
    read_pairs,
)
from finerank.errors import ConflictError, InvalidInputError
from finerank.settings import Settings
from tests.distributed.conftest import make_pairs, write_jsonl


def in_process(reranker, rows: list[dict]) -> dict[str, tuple[float, int]]:
    """id -> (score, rank) from Reranker.rerank, one call per (instruction, query)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("instruction"), row["query"]), []).append(row)
    expected = {}
    for (instruction, query), members in groups.items():
        results = reranker.rerank(query, [m["document"] for m in members], instruction=instruction)
        for rank, result in enumerate(results, start=1):
            expected[members[result.index]["id"]] = (result.score, rank)
    return expected


def read_output(out) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))


def assert_matches(table: pa.Table, expected: dict[str, tuple[float, int]]) -> None:
    ids = table["id"].to_pylist()
    assert len(ids) == len(set(ids)) == len(expected), "every pair exactly once"
    for id_, score, rank in zip(
        ids, table["score"].to_pylist(), table["rank"].to_pylist(), strict=True
    ):
        assert score == pytest.approx(expected[id_][0], abs=1e-6), id_
        assert rank == expected[id_][1], id_


# ---- without Ray ------------------------------------------------------------------------
def test_plan_keeps_queries_whole_and_orders_by_length():
    rows = make_pairs(1, queries=12, max_docs=9)
    table = pa.Table.from_pylist(rows)
    plan = plan_parts(table, part_size=10)
    seen = []
    for part in range(plan.num_parts):
        part_rows = plan.rows(part).tolist()
        seen += part_rows
        queries = [rows[r]["query"] for r in part_rows]
        # each query appears as one contiguous run, longest document first
        runs = [q for i, q in enumerate(queries) if i == 0 or queries[i - 1] != q]
        assert len(runs) == len(set(runs))
        for query in runs:
            lengths = [len(rows[r]["document"]) for r in part_rows if rows[r]["query"] == query]
            assert lengths == sorted(lengths, reverse=True)
    assert sorted(seen) == list(range(len(rows)))
    query_parts: dict[str, set[int]] = {}
    for part in range(plan.num_parts):
        for r in plan.rows(part):
            query_parts.setdefault(rows[r]["query"], set()).add(part)
    assert all(len(parts) == 1 for parts in query_parts.values()), "a query was split"
    assert plan_parts(table, 10).order.tolist() == plan.order.tolist()  # deterministic


def test_bad_inputs_say_what_to_fix(tmp_path):
    with pytest.raises(InvalidInputError, match="missing column.*document"):
        read_pairs(write_jsonl(tmp_path / "a.jsonl", [{"query": "q", "text": "d"}]))
    with pytest.raises(InvalidInputError, match="row 1 has no document"):
        read_pairs(
            write_jsonl(
                tmp_path / "b.jsonl",
                [{"query": "q", "document": "d"}, {"query": "q", "document": None}],
            )
        )
    with pytest.raises(InvalidInputError, match="'document' must hold strings"):
        read_pairs(write_jsonl(tmp_path / "c.jsonl", [{"query": "q", "document": 3}]))
    (tmp_path / "d.csv").write_text("query,document\n")
    with pytest.raises(InvalidInputError, match="unknown input format"):
        read_pairs(tmp_path / "d.csv")
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "missing.parquet")

    from finerank.cli import app

    result = CliRunner().invoke(
        app,
        ["batch", "rerank", str(tmp_path / "a.jsonl"), str(tmp_path / "out"), "--model", "unused"],
    )
    assert result.exit_code == 2 and "missing column(s) document" in result.output


def test_one_failing_pair_costs_one_error_row(qwen3_reranker_dir, qwen3_reranker, monkeypatch):
    settings = Settings(model=str(qwen3_reranker_dir), device="cpu", dtype="float32")
    scorer = PairScorer(settings, reranker=qwen3_reranker)
    encode = scorer.reranker.backend.encode

    def encode_failing_on_poison(query, documents, *args, **kwargs):
        if any("POISON" in d for d in documents):
            raise RuntimeError("cannot encode this document")
        return encode(query, documents, *args, **kwargs)

    monkeypatch.setattr(scorer.reranker.backend, "encode", encode_failing_on_poison)
    docs = ["contract law", "POISON pill", "river sky", "court appeal"]
    batch = pa.table(
        {"_part": [0] * 4, "_row": [0, 1, 2, 3], "query": ["law"] * 4, "document": docs}
    )
    out = scorer(batch)
    errors = out["error"].to_pylist()
    assert [e is not None for e in errors] == [False, True, False, False]
    assert "cannot encode" in errors[1] and math.isnan(out["logit"][1].as_py())
    monkeypatch.undo()
    good = [d for d in docs if "POISON" not in d]
    expected = qwen3_reranker.score([("law", d) for d in good])
    got = [s for s, e in zip(out["score"].to_pylist(), errors, strict=True) if e is None]
    assert got == pytest.approx(expected, abs=1e-6)


def test_an_actor_compiles_at_start_not_in_its_first_batch(qwen3_reranker_dir, compiles, caplog):
    settings = Settings(model=str(qwen3_reranker_dir), device="cpu", dtype="float32")
    with caplog.at_level("INFO", logger="finerank.models.fused"):
        scorer = PairScorer(settings)  # what a Ray actor runs at start: Runtime, then warm-up
    assert sorted(compiles) == ["qk_norm_rope", "rms_norm"]
    assert not scorer.reranker.backend.warm_up_due
    assert "warm-up forward (compiling kernels) took" in caplog.text
    docs = ["contract law", "river sky"]
    batch = pa.table({"_part": [0, 0], "_row": [0, 1], "query": ["law"] * 2, "document": docs})
    out = scorer(batch)
    assert out["error"].to_pylist() == [None, None] and len(compiles) == 2  # nothing new


# ---- on the local Ray cluster ------------------------------------------------------------
@pytest.mark.ray
def test_interrupted_job_resumes_and_equals_in_process_scores(
    ray_cluster, tmp_path, qwen3_reranker_dir, qwen3_reranker
):
    """Job 1 is interrupted after its first part; job 2 (the CLI) finishes the rest."""
    rows = make_pairs(3, queries=12, max_docs=8, instructions=True)
    source = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    out = tmp_path / "out"
    settings = Settings(model=str(qwen3_reranker_dir), device="cpu", dtype="float32")

    class Interrupted(Exception):
        pass

    def stop_after_first_part(progress):
        raise Interrupted

    with pytest.raises(Interrupted):
        batch_rerank(
            source, out, settings, part_size=15, batch_size=16, progress=stop_after_first_part
        )
    written = sorted(out.glob("part-*.parquet"))
    assert len(written) == 1 and not (out / SUCCESS_FILE).exists()
    first_part = pq.read_table(written[0])
    first_mtime = written[0].stat().st_mtime_ns
    (out / ".part-00001.parquet.tmp").write_bytes(b"half-written part of a killed run")

    from finerank.cli import app

    result = CliRunner().invoke(
        app,
        [
            "batch",
            "rerank",
            str(source),
            str(out),
            "--model",
            str(qwen3_reranker_dir),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--part-size",
            "15",
            "--batch-size",
            "16",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    plan_sizes = [len(pq.read_table(p)) for p in sorted(out.glob("part-*.parquet"))]
    assert summary["parts_skipped"] == 1 and summary["parts"] == len(plan_sizes) > 2
    assert summary["pairs_scored"] == len(rows) - first_part.num_rows
    assert summary["failures"] == 0 and summary["pairs"] == len(rows)
    assert written[0].stat().st_mtime_ns == first_mtime  # the finished part was not redone
    assert not list(out.glob(".part-*.tmp"))
    assert json.loads((out / JOB_FILE).read_text())["parts"] == summary["parts"]
    assert part_path(out, 0).exists()
    output = read_output(out)
    assert_matches(output, in_process(qwen3_reranker, rows))
    assert "document" not in output.column_names  # only with --keep-documents
    assert summary["queries"] == len({(r["instruction"], r["query"]) for r in rows})
    assert json.loads((out / SUCCESS_FILE).read_text())["failures"] == 0


def test_output_of_another_job_is_not_mixed(tmp_path, qwen3_reranker_dir):
    rows = make_pairs(4, queries=3, max_docs=3)
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    out.mkdir()
    settings = Settings(model=str(qwen3_reranker_dir), device="cpu", dtype="float32")
    table = read_pairs(source)
    plan = plan_parts(table, 10)
    from finerank.distributed.batch_rerank import _job_description

    job = _job_description(
        source,
        table,
        plan,
        settings,
        {"part_size": 10, "max_tokens_per_doc": None, "keep_documents": False},
    )
    (out / JOB_FILE).write_text(json.dumps(job))
    # Same output dir, different scoring settings: refuse instead of mixing two jobs.
    with pytest.raises(ConflictError, match=r"differs in: settings\)"):
        batch_rerank(source, out, settings.model_copy(update={"max_length": 512}), part_size=10)
    # A directory with parts but no job file is not ours to fill either.
    (out / JOB_FILE).unlink()
    pq.write_table(pa.table({"x": [1]}), out / "part-00000.parquet")
    with pytest.raises(ConflictError, match="no _job.json"):
        batch_rerank(source, out, settings, part_size=10)
