"""The page's errors through its own HTTP API (issue 11.6): a bug behind the page is a notice,
logged with its traceback, never its internals (domain errors are shown as their message)."""

from __future__ import annotations

import logging

from tests.server.test_faults import BuggyEngine
from tests.ui.conftest import _serve_with_page
from tests.ui.page_api import PageClient


def _shown(answer) -> str:
    assert answer.join_status == 200 and answer.event == "complete", answer.text
    return answer.text


def test_a_bug_behind_the_page_is_logged_and_not_shown(qwen3_reranker, qwen3_reranker_dir, caplog):
    from finerank.reranker import Reranker

    buggy = Reranker(BuggyEngine(qwen3_reranker.engine), name="tiny", path="", load_seconds=0)
    caplog.set_level(logging.ERROR, logger="finerank.ui")
    with _serve_with_page(buggy, qwen3_reranker_dir) as (base, _):
        client = PageClient(base)
        try:
            shown = _shown(client.call("do_rerank", ["q", "", "a\nb", 0, "truncate"]))
        finally:
            client.close()
    assert "internal error (see the server log)" in shown
    assert "secret" not in shown and "ValueError" not in shown
    logged = [r for r in caplog.records if r.name == "finerank.ui" and r.exc_info]
    assert logged and "secret_module" in str(logged[0].exc_info[1])
