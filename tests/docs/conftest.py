"""A user's working directory for the docs tests: the test models under their documented names.

The README's quick start makes ``./tiny-qwen3`` (``finerank make-test-model ./tiny-qwen3``);
the manual's examples also use ``./tiny-qwen3-emb`` (``--kind qwen3-embedding``) and
``./tiny-bert`` (``--kind bert-cross-encoder``). A workspace links those names to the session's
models (built by the same builders, so identical to what the commands write), links ``data/`` to
the repository's, and keeps finerank's default data and cache directories inside itself.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@dataclass
class Workspace:
    path: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def docs_models(qwen3_reranker_dir, qwen3_embedding_dir, bert_cross_encoder_dir) -> dict[str, Path]:
    return {
        "tiny-qwen3": qwen3_reranker_dir,
        "tiny-qwen3-emb": qwen3_embedding_dir,
        "tiny-bert": bert_cross_encoder_dir,
    }


def make_workspace(path: Path, models: dict[str, Path]) -> Workspace:
    """A fresh directory holding the documented test-model names and ``data/``."""
    path.mkdir(parents=True, exist_ok=True)
    for name, target in models.items():
        (path / name).symlink_to(target, target_is_directory=True)
    (path / "data").symlink_to(REPO_ROOT / "data", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINERANK_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        COLUMNS="80",
        XDG_DATA_HOME=str(path / ".local" / "share"),
        XDG_CACHE_HOME=str(path / ".cache"),
        PYTHONUNBUFFERED="1",
    )
    return Workspace(path, env)


@pytest.fixture
def docs_workspace(tmp_path, docs_models, monkeypatch) -> Workspace:
    """A workspace as the current directory and environment of this test."""
    workspace = make_workspace(tmp_path / "work", docs_models)
    monkeypatch.chdir(workspace.path)
    for key in [k for k in os.environ if k.startswith("FINERANK_")]:
        monkeypatch.delenv(key)
    for key in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "COLUMNS"):
        monkeypatch.setenv(key, workspace.env[key])
    return workspace
