"""The docs stay true: every setting is documented, the quick start matches .ci/run."""

from __future__ import annotations

import re

from finerank.settings import Settings
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_every_setting_is_documented():
    missing = [
        f"FINERANK_{name.upper()}"
        for name in Settings.model_fields
        if f"FINERANK_{name.upper()}" not in CONFIGURATION
    ]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(pip install .+)$", quick_start, flags=re.M)
    assert len(commands) == 2, commands
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci
