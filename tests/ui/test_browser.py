"""The page in a real browser: what it shows equals what the Python API computes."""

from __future__ import annotations

import pytest

from finerank.ui.app import example, example_documents

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000


# Only finerank's own nodes: gradio adds and removes loading overlays around them.
_CONTENT_JS = (
    "(sel) => { const el = document.querySelector(sel); if (!el) return '';"
    " return Array.from(el.querySelectorAll('.fr-message, table.fr-results, .fr-columns'))"
    ".map(n => n.outerHTML).join(''); }"
)


def _wait_for_output(page, selector: str, previous: str = "") -> str:
    """Wait until the output element shows new finerank content; return that content."""
    page.wait_for_function(
        f"([sel, prev]) => {{ const c = ({_CONTENT_JS})(sel); return c !== '' && c !== prev; }}",
        arg=[selector, previous],
        timeout=TIMEOUT_MS,
    )
    return page.evaluate(_CONTENT_JS, selector)


def _rerank_order(page) -> list[int]:
    rows = page.query_selector_all("#fr-rerank-table tr.fr-row")
    return [int(row.get_attribute("data-index")) for row in rows]


def test_rerank_tab_matches_the_python_api(page, qwen3_reranker, artifacts):
    ex = example()
    page.click("#fr-rerank-button")
    _wait_for_output(page, "#fr-rerank-output")
    shown = _rerank_order(page)
    documents = example_documents().splitlines()
    expected = qwen3_reranker.rerank(ex["query"], documents, instruction=ex["instruction"])
    assert shown == [r.index for r in expected]
    assert len(shown) == len(ex["articles"])
    scores = [
        float(row.get_attribute("data-score"))
        for row in page.query_selector_all("#fr-rerank-table tr.fr-row")
    ]
    assert scores == pytest.approx([r.score for r in expected], abs=1e-5)
    page.screenshot(path=str(artifacts / "ui-rerank.png"), full_page=True)

    # another query, top_n and the default instruction (empty box)
    before = page.evaluate(_CONTENT_JS, "#fr-rerank-output")
    page.fill("#fr-query textarea", "网络运营者的安全保护义务")
    page.fill("#fr-instruction textarea", "")
    page.fill("#fr-top-n input", "3")
    page.click("#fr-rerank-button")
    _wait_for_output(page, "#fr-rerank-output", before)
    expected = qwen3_reranker.rerank("网络运营者的安全保护义务", documents, top_n=3)
    assert _rerank_order(page) == [r.index for r in expected]


def test_rerank_tab_explains_bad_input(page, ui_server):
    settings = ui_server[1]
    cases = [
        ("#fr-documents textarea", "", "no documents"),
        (
            "#fr-documents textarea",
            "\n".join(f"doc {i}" for i in range(settings.max_documents_per_request + 1)),
            "too many documents: 31 > max_documents_per_request=30",
        ),
        ("#fr-query textarea", "   ", "the query is empty"),
    ]
    previous = ""
    for selector, value, expected in cases:
        page.fill(selector, value)
        page.click("#fr-rerank-button")
        previous = _wait_for_output(page, "#fr-rerank-output", previous)
        assert page.inner_text("#fr-rerank-output .fr-error").startswith(expected)


def test_search_tab_shows_both_orders(page, ui_server, qwen3_reranker, law_collection, artifacts):
    import shutil
    import tempfile

    from finerank.retrieval.search import SearchService, rerank_text
    from finerank.retrieval.store import VectorStore
    from finerank.ui.render import movement

    ex = example()
    page.get_by_role("tab", name="Search").click()
    page.wait_for_selector("#fr-search-button", timeout=TIMEOUT_MS)
    page.fill("#fr-recall-k input", "12")
    page.fill("#fr-search-top-n input", "6")
    page.click("#fr-search-button")
    _wait_for_output(page, "#fr-search-output")
    cards = page.query_selector_all("#fr-first-stage .fr-hit")
    first = [card.get_attribute("data-chunk") for card in cards]
    reranked = page.query_selector_all("#fr-reranked .fr-hit")
    page.screenshot(path=str(artifacts / "ui-search.png"), full_page=True)

    # The same search through the Python API. The server holds the embedded store's lock,
    # so read a copy of its directory.
    with tempfile.TemporaryDirectory() as copy:
        shutil.copytree(
            law_collection, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock")
        )
        store = VectorStore.open(data_dir=copy)
        try:
            hits = (
                SearchService(store)
                .search("laws", ex["query"], mode="bm25", recall_k=12, top_n=12, rerank=False)
                .hits
            )
        finally:
            store.close()
    assert first == [hit.chunk_id for hit in hits[:6]]
    results = qwen3_reranker.rerank(
        ex["query"], [rerank_text(h) for h in hits], instruction=ex["instruction"]
    )
    expected_order = [hits[r.index] for r in results[:6]]
    assert [c.get_attribute("data-chunk") for c in reranked] == [h.chunk_id for h in expected_order]
    for rank, (card, hit) in enumerate(zip(reranked, expected_order, strict=True), start=1):
        label, _ = movement(hit.first_stage_rank, rank, 6)
        assert card.get_attribute("data-move") == label
        assert "中华人民共和国网络安全法" in card.inner_text()  # article metadata is shown


def test_an_upload_fills_the_documents_box(page, qwen3_reranker, tmp_path):
    import json

    texts = ["违反本法第二十七条规定的处罚", "网络运营者的义务", "个人信息的保护", "附则"]
    upload = tmp_path / "docs.jsonl"
    upload.write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts), encoding="utf-8"
    )
    page.set_input_files("#fr-upload input[type=file]", str(upload))
    page.wait_for_function(
        "(n) => document.querySelector('#fr-documents textarea').value.split('\\n').length === n",
        arg=len(texts),
        timeout=TIMEOUT_MS,
    )
    assert page.input_value("#fr-documents textarea").splitlines() == texts
    assert "4 documents from docs.jsonl are in the box" in page.inner_text("#fr-upload-note")
    page.click("#fr-rerank-button")
    content = _wait_for_output(page, "#fr-rerank-output")
    assert "4 documents ranked" in content
    ex = example()
    expected = qwen3_reranker.rerank(ex["query"], texts, instruction=ex["instruction"])
    assert _rerank_order(page) == [r.index for r in expected]


def test_the_example_instruction_leaves_with_the_example_query(page, qwen3_reranker):
    ex = example()
    assert page.input_value("#fr-instruction textarea") == ex["instruction"]
    page.fill("#fr-query textarea", "数据出境需要满足什么条件？")
    page.wait_for_function(
        "() => document.querySelector('#fr-instruction textarea').value === ''",
        timeout=TIMEOUT_MS,
    )
    page.click("#fr-rerank-button")
    content = _wait_for_output(page, "#fr-rerank-output")
    assert "instruction: the default" in content
    documents = example_documents().splitlines()
    expected = qwen3_reranker.rerank("数据出境需要满足什么条件？", documents)
    assert _rerank_order(page) == [r.index for r in expected]
    # An instruction the user typed stays, whatever the query.
    page.fill("#fr-instruction textarea", "判断文档是否回答问题")
    page.fill("#fr-query textarea", "另一个问题")
    page.click("#fr-rerank-button")
    assert "判断文档是否回答问题" in _wait_for_output(page, "#fr-rerank-output", content)
    # The Search tab behaves the same.
    page.get_by_role("tab", name="Search").click()
    page.fill("#fr-search-query textarea", "数据出境")
    page.wait_for_function(
        "() => document.querySelector('#fr-search-instruction textarea').value === ''",
        timeout=TIMEOUT_MS,
    )


def test_a_keyed_page_opens_after_signing_in(browser, ui_keyed_server):
    from tests.ui.conftest import UI_KEY

    base = ui_keyed_server[0]
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base}/ui/")
        assert "/login" in page.url  # sent to the login form, nothing of the page served
        page.fill("#key", "wrong-key")
        page.click("button[type=submit]")
        assert "not valid" in page.inner_text("body")
        page.fill("#key", UI_KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("#fr-rerank-button", timeout=TIMEOUT_MS)
        page.click("#fr-rerank-button")  # queue, SSE and all run on the session cookie
        _wait_for_output(page, "#fr-rerank-output")
        assert len(_rerank_order(page)) == len(example()["articles"])
        cookie = next(c for c in context.cookies() if c["name"] == "finerank_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        context.close()


def test_api_docs_render_offline(browser, ui_server):
    """Swagger UI and ReDoc render the API from the package's assets; the browser fetches
    nothing from anywhere else (ReDoc's remote logo is blocked by the page's CSP)."""
    base = ui_server[0]
    context = browser.new_context()
    fetched: list[str] = []
    failed: dict[str, str] = {}
    try:
        page = context.new_page()
        page.on("response", lambda response: fetched.append(response.url))
        page.on("requestfailed", lambda request: failed.update({request.url: request.failure}))
        page.goto(f"{base}/docs")
        page.get_by_text("/v1/rerank", exact=True).first.wait_for(timeout=TIMEOUT_MS)
        page.goto(f"{base}/redoc")
        page.get_by_text("/v2/rerank").first.wait_for(timeout=TIMEOUT_MS)
    finally:
        context.close()
    local = (base, f"blob:{base}")
    assert not [url for url in fetched if not url.startswith(local)]
    blocked = {url: why for url, why in failed.items() if not url.startswith(local)}
    assert all(why == "csp" for why in blocked.values()), blocked  # refused, never sent
