"""The docstring examples of every finerank module run, in a user's working directory.

Examples that need real weights, a network or minutes carry ``# doctest: +SKIP``; the others
run against the test models under their documented names (``./tiny-qwen3``, see conftest).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import pkgutil
from pathlib import Path

import pytest

import finerank


def _modules_with_examples() -> list[str]:
    names = ["finerank"] + [
        info.name for info in pkgutil.walk_packages(finerank.__path__, "finerank.")
    ]
    found = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin and ">>>" in Path(spec.origin).read_text(encoding="utf-8"):
            found.append(name)
    return sorted(found)


MODULES = _modules_with_examples()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, docs_workspace):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in tests:
        if test.filename and not test.filename.endswith(".py"):
            continue
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, report.getvalue()
    if result.attempted == 0:
        pytest.skip("every example is marked +SKIP (needs real weights or a server)")


def test_public_api_has_examples():
    """The public entry points keep a runnable (or explicitly skipped) example."""
    from finerank import Reranker
    from finerank.retrieval.search import SearchService
    from finerank.settings import Settings

    for obj in (finerank, Reranker, Reranker.from_pretrained, Reranker.rerank, Settings):
        assert ">>>" in (obj.__doc__ or "") or ">>>" in (
            importlib.import_module(obj.__module__).__doc__ or ""
        ), obj
    assert SearchService.search.__doc__
