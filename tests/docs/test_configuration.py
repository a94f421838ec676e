"""docs/configuration.md is generated from Settings and current; every setting is described."""

from __future__ import annotations

import runpy

from finerank.settings import Settings
from tests.conftest import REPO_ROOT

GENERATOR = runpy.run_path(str(REPO_ROOT / "docs" / "gen_configuration.py"))


def test_configuration_page_is_current():
    page = GENERATOR["PAGE"].read_text(encoding="utf-8")
    assert GENERATOR["BEGIN"] in page and GENERATOR["END"] in page
    assert GENERATOR["render"](page) == page, "run: python docs/gen_configuration.py"


def test_every_setting_is_described_and_listed():
    table = GENERATOR["table"]()
    for name, info in Settings.model_fields.items():
        assert (info.description or "").strip(), f"Settings.{name} needs a description"
        assert f"| `{name}` | `FINERANK_{name.upper()}` |" in table


def test_generator_follows_the_class(monkeypatch):
    """A stale page is caught: the table changes with a field's description."""
    info = Settings.model_fields["port"]
    monkeypatch.setattr(info, "description", "a changed meaning")
    assert "| a changed meaning |" in GENERATOR["table"]()
    page = GENERATOR["PAGE"].read_text(encoding="utf-8")
    assert GENERATOR["render"](page) != page
