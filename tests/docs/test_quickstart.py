"""The README's quick start is what CI runs: two commands, the first in its offline form."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def _quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_ci_runs_the_readme_quick_start():
    """Two commands (one serves, one tests); CI runs both, the first in its offline form."""
    commands = re.findall(r"^(pip install .+)$", _quick_start(), flags=re.M)
    assert len(commands) == 2, commands
    serve, tests = commands
    assert serve.endswith("&& finerank serve"), serve
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = serve.split(" && ")[0]
    assert re.search(rf"^{re.escape(install)}$", ci, flags=re.M), install
    assert re.search(rf"^{re.escape(tests)}$", ci, flags=re.M), tests
    assert ci.index(install) < ci.index("bash .ci/quickstart-offline") < ci.index(tests)
    offline = re.findall(r"^(finerank make-test-model .+)$", _quick_start(), flags=re.M)
    assert len(offline) == 1, offline
    script = (REPO_ROOT / ".ci" / "quickstart-offline").read_text(encoding="utf-8")
    for command in offline[0].split(" && "):
        assert re.search(rf"^{re.escape(command)}\b", script, flags=re.M), command
