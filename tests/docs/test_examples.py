"""Every example in README.md and docs/*.md runs as written and prints what the docs say.

How examples are found, run and compared, and how to mark the ones that cannot run here:
``tests/docs/harness.py`` and docs/development.md ("Examples are tests").
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import REPO_ROOT
from tests.docs.harness import ExampleFailure, PageRunner, parse_page

PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md"))]
# Pages whose examples reveal a known bug being fixed: strict, so the fix makes this fail.
KNOWN_BUGS: dict[str, str] = {}


def _blocks(page: str):
    return parse_page((REPO_ROOT / page).read_text(encoding="utf-8"), page)


def _runnable(page: str):
    return [b for b in _blocks(page) if b.kind and b.skip_reason is None]


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(page, marks=pytest.mark.xfail(reason=KNOWN_BUGS[page], strict=True))
        if page in KNOWN_BUGS
        else page
        for page in PAGES
        if _runnable(page)
    ],
)
def test_page_examples(page, docs_workspace):
    runnable = _runnable(page)
    needs_curl = any("curl " in b.text for b in runnable if b.kind != "python")
    if needs_curl and shutil.which("curl") is None:
        if os.environ.get("FINERANK_DOCS_TEST_STRICT"):
            pytest.fail("curl is not installed (CI installs it: .ci/run)")
        pytest.skip("curl is not installed")
    runner = PageRunner(docs_workspace.path, docs_workspace.env)
    problem = None
    try:
        for block in runnable:
            runner.run_block(block)
    except ExampleFailure as failure:
        problem = str(failure)
    finally:
        try:
            runner.close()
        except ExampleFailure as failure:
            problem = problem or str(failure)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_every_skip_says_why():
    for page in PAGES:
        for block in _blocks(page):
            reason = block.skip_reason
            assert reason is None or reason.strip(), f"{block.where}: skip needs a (reason)"
            for marker in block.markers:
                name = marker.split()[0].split("=")[0]
                assert name in {"skip", "exit", "timeout", "output", "any-output"}, (
                    f"{block.where}: unknown docs-test marker {marker!r}"
                )


def coverage() -> str:
    """Blocks run vs skipped per page (``python -m tests.docs.test_examples``)."""
    lines, total_run, total_skip = [], 0, 0
    for page in PAGES:
        blocks = [b for b in _blocks(page) if b.kind]
        skipped = [b for b in blocks if b.skip_reason is not None]
        total_run += len(blocks) - len(skipped)
        total_skip += len(skipped)
        lines.append(f"{page}: {len(blocks) - len(skipped)} run, {len(skipped)} skipped")
        lines += [f"    skip {b.where}: {b.skip_reason}" for b in skipped]
    lines.append(f"total: {total_run} run, {total_skip} skipped")
    return "\n".join(lines)


if __name__ == "__main__":
    print(coverage())
