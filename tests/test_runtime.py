"""The runtime: the one place that turns Settings into components, each built once, in order;
and every front end (CLI, HTTP, page, Ray, eval) builds through it."""

from __future__ import annotations

import ast
import asyncio
import json

import pytest
from typer.testing import CliRunner

import finerank.runtime as runtime_module
from finerank.cli import app as cli_app
from finerank.errors import ModelLoadError, ServiceUnavailableError
from finerank.runtime import ComponentState, Runtime
from finerank.settings import Settings
from tests.conftest import REPO_ROOT


@pytest.fixture
def counted_builders(monkeypatch):
    """The real builders, counted: (component name, source) in call order."""
    calls: list[tuple[str, str]] = []
    real = {
        "reranker": runtime_module.build_reranker,
        "embedder": runtime_module.build_embedder,
        "store": runtime_module.open_store,
    }

    def reranker(settings, **options):
        calls.append(("reranker", settings.model))
        return real["reranker"](settings, **options)

    def embedder(settings, source=None, **options):
        calls.append(("embedder", source or settings.embedding_model))
        return real["embedder"](settings, source, **options)

    def store(settings):
        calls.append(("store", str(settings.data_dir)))
        return real["store"](settings)

    monkeypatch.setattr(runtime_module, "build_reranker", reranker)
    monkeypatch.setattr(runtime_module, "build_embedder", embedder)
    monkeypatch.setattr(runtime_module, "open_store", store)
    return calls


def _settings(tmp_path, reranker_dir, embedding_dir=None, **overrides) -> Settings:
    values = dict(
        model=str(reranker_dir),
        embedding_model=str(embedding_dir) if embedding_dir else None,
        data_dir=tmp_path / "qdrant",
        device="cpu",
        dtype="float32",
    )
    values.update(overrides)
    return Settings(**values)


def test_start_builds_each_component_once_in_order(
    tmp_path, counted_builders, qwen3_reranker_dir, qwen3_embedding_dir
):
    runtime = Runtime(_settings(tmp_path, qwen3_reranker_dir, qwen3_embedding_dir))
    assert [c.state for c in runtime.status()] == [ComponentState.PENDING] * 3
    assert not runtime.ready and "reranker" in runtime.not_ready_message()
    runtime.start()
    try:
        assert [name for name, _ in counted_builders] == ["reranker", "embedder", "store"]
        assert runtime.ready and [c.state for c in runtime.status()] == [ComponentState.READY] * 3
        # the services run on the very components the accessors return
        assert runtime.rerank.reranker is runtime.reranker()
        assert runtime.embeddings.embedder is runtime.embedder()
        assert runtime.retrieval.store is runtime.store()
        runtime.start()  # idempotent
        assert len(counted_builders) == 3
    finally:
        runtime.stop()
    assert not runtime.ready and runtime.not_ready_message() == "the service is shutting down"


def test_lazy_accessors_build_only_what_is_used(tmp_path, counted_builders, qwen3_reranker_dir):
    with Runtime(_settings(tmp_path, qwen3_reranker_dir)) as runtime:
        assert runtime.configured == ["reranker", "store"]
        store = runtime.store()
        assert runtime.store() is store
        assert counted_builders == [("store", str(tmp_path / "qdrant"))]
        assert runtime.search_service(rerank=False).reranker is None
        assert len(counted_builders) == 1  # the reranker was never needed


def test_a_failed_component_is_named_and_the_others_still_load(tmp_path, qwen3_reranker_dir):
    runtime = Runtime(
        _settings(tmp_path, qwen3_reranker_dir, embedding_model=str(tmp_path / "missing"))
    )
    with pytest.raises(ModelLoadError, match="not found"):
        runtime.start()
    try:
        states = {c.name: c.state for c in runtime.status()}
        assert states == {
            "reranker": ComponentState.READY,
            "embedder": ComponentState.FAILED,
            "store": ComponentState.READY,
        }
        assert runtime.not_ready_message().startswith("embedder failed to load:")
        assert runtime.require_rerank().ready  # reranking still works (the web page's case)
        with pytest.raises(ServiceUnavailableError, match="embedder failed to load"):
            runtime.require_embeddings()
        with pytest.raises(ServiceUnavailableError, match="embedder failed to load"):
            runtime.require_retrieval()
    finally:
        runtime.stop()


def test_the_default_model_message_names_the_way_out():
    message = runtime_module.default_model_unavailable()
    assert "Qwen/Qwen3-Reranker-0.6B" in message
    assert "finerank make-test-model DIR" in message and "finerank serve --model DIR" in message


# ---- every front end builds through the runtime ---------------------------------------------
# Constructors that turn a configuration into a loaded component. Outside finerank/runtime.py
# only the throwaway evaluation store (a temporary directory, not a configured store) and the
# benchmark (which loads one model per measured dtype) may call them.
BUILDERS = {
    ("Reranker", "from_pretrained"),
    ("Embedder", "from_pretrained"),
    ("VectorStore", "open"),
    ("VectorStore", "from_settings"),
    ("VectorStore", "memory"),
}
ALLOWED = {
    "finerank/runtime.py",
    "finerank/evaluation/first_stage.py",  # VectorStore.open(data_dir=<temporary directory>)
    "finerank/bench/runner.py",  # one Reranker per measured dtype
    "finerank/bench/contenders.py",  # the library itself, one contender among its peers
}


def test_no_front_end_builds_components_itself():
    offenders = []
    for path in sorted((REPO_ROOT / "finerank").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = owner.id if isinstance(owner, ast.Name) else None
                if (name, node.func.attr) in BUILDERS and relative not in ALLOWED:
                    offenders.append(f"{relative}:{node.lineno} {name}.{node.func.attr}")
            if (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("finerank.retrieval.store")
                and any(alias.name == "open_store" for alias in node.names)
                and relative != "finerank/runtime.py"
                and not relative.startswith("finerank/retrieval/store/")
            ):
                offenders.append(f"{relative}:{node.lineno} imports open_store")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("RerankService", "EmbeddingService", "RetrievalService")
                and relative != "finerank/runtime.py"
            ):
                offenders.append(f"{relative}:{node.lineno} {node.func.id}(...)")
    assert not offenders, offenders


def test_the_ui_does_not_import_the_cli():
    for path in (REPO_ROOT / "finerank" / "ui").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("finerank.cli"), path


def test_finerank_env_reaches_rerank_and_eval(tmp_path, monkeypatch, qwen3_reranker_dir):
    """``finerank rerank`` and ``finerank eval`` read FINERANK_* through Settings (they ignored
    it entirely before): the model, device and dtype come from the environment."""
    monkeypatch.setenv("FINERANK_MODEL", str(qwen3_reranker_dir))
    monkeypatch.setenv("FINERANK_DEVICE", "cpu")
    monkeypatch.setenv("FINERANK_DTYPE", "float32")
    runner = CliRunner()
    result = runner.invoke(cli_app, ["rerank", "-q", "capital", "-d", "Paris", "-d", "x", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["index"] for row in json.loads(result.stdout)] in ([0, 1], [1, 0])

    dataset = tmp_path / "beir"
    (dataset / "qrels").mkdir(parents=True)
    (dataset / "corpus.jsonl").write_text(
        '{"_id": "d1", "text": "wing flutter in a slipstream"}\n'
        '{"_id": "d2", "text": "heat conduction in slabs"}\n',
        encoding="utf-8",
    )
    (dataset / "queries.jsonl").write_text('{"_id": "q1", "text": "flutter"}\n', encoding="utf-8")
    (dataset / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    result = runner.invoke(cli_app, ["eval", "--dataset", str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["model"] == str(qwen3_reranker_dir)
    assert report["runs"] and all("reranked" in run for run in report["runs"])
    result = runner.invoke(cli_app, ["eval", "--dataset", str(dataset), "--json", "--no-rerank"])
    report = json.loads(result.stdout)
    assert report["runs"] and not any("reranked" in run for run in report["runs"])


@pytest.fixture
def recorded_compiles(monkeypatch):
    """``torch.compile`` replaced by the eager function, each call recorded with what the
    caller's probe returns then (what the real compiler does is tested in
    tests/models/test_fused.py; here: when it runs)."""
    import torch

    calls: list[object] = []
    probe = {"now": lambda: None}

    def compile_(fn, **kwargs):
        calls.append(probe["now"]())
        return fn

    monkeypatch.setattr(torch, "compile", compile_)
    return calls, probe


def _kernels(runtime: Runtime):
    return [runtime.reranker().backend.decoder.kernels, runtime.embedder().decoder.kernels]


def test_kernels_that_compile_are_warmed_up_before_the_runtime_is_ready(
    tmp_path, monkeypatch, recorded_compiles, qwen3_reranker_dir, qwen3_embedding_dir
):
    calls, probe = recorded_compiles
    monkeypatch.setenv("FINERANK_COMPILE", "1")  # the tiny models compile too
    runtime = Runtime(_settings(tmp_path, qwen3_reranker_dir, qwen3_embedding_dir))
    probe["now"] = lambda: (runtime.ready, runtime.not_ready_message())
    with runtime:
        runtime.start()
        # both functions of both models compiled at start, while /health said starting
        assert calls == [(False, "starting the services")] * 4
        assert runtime.ready
        for kernels in _kernels(runtime):
            assert kernels.compiled == {"qk_norm_rope": True, "rms_norm": True}
            assert not kernels.pending
        asyncio.run(runtime.rerank.rerank("q", ["a document", "another one"]))
        assert len(calls) == 4  # the first request compiled nothing


def test_compile_option_reaches_every_model_the_runtime_loads(
    tmp_path, monkeypatch, qwen3_reranker_dir, qwen3_embedding_dir
):
    monkeypatch.delenv("FINERANK_COMPILE", raising=False)
    settings = _settings(tmp_path, qwen3_reranker_dir, qwen3_embedding_dir)
    with Runtime(settings, compile="on") as runtime:  # the tiny fp32 models compile too
        assert all(kernels.enabled for kernels in _kernels(runtime))
    monkeypatch.setenv("FINERANK_COMPILE", "1")
    with Runtime(settings, compile="off") as runtime:  # the operator's switch wins
        assert all(kernels.enabled for kernels in _kernels(runtime))


def test_no_warm_up_when_nothing_compiles(
    tmp_path, monkeypatch, recorded_compiles, qwen3_reranker_dir, qwen3_embedding_dir
):
    calls, _ = recorded_compiles
    monkeypatch.delenv("FINERANK_COMPILE", raising=False)  # auto: fp32 and tiny stay eager
    with Runtime(_settings(tmp_path, qwen3_reranker_dir, qwen3_embedding_dir)) as runtime:
        runtime.start()
        assert runtime.ready and not calls
        for kernels in _kernels(runtime):
            assert not kernels.pending and kernels.compiled == {}  # no forward ran at start
