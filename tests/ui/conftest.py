"""A served page (``create_app`` with ``ui=True``: the ``finerank serve --ui`` path) on a
free port, a small BM25 law collection, and headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
COLLECTION = "laws"
# the Cybersecurity Law 2016 articles the collection holds
ARTICLES = [
    f"CSL2016-{n:03d}"
    for n in (1, 8, 12, 21, 22, 27, 31, 41, 44, 46, 48, 59, 63, 64, 65, 67, 74, 76)
]


def chromium_executable() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def law_collection(tmp_path_factory, shared_data) -> Path:
    """An embedded-Qdrant data dir holding a BM25-only collection of 18 law articles."""
    from finerank.retrieval.chunkers import get_chunker
    from finerank.retrieval.ingest import ingest
    from finerank.retrieval.store import VectorStore

    root = tmp_path_factory.mktemp("ui-data")
    source = root / "articles.jsonl"
    with (shared_data / "laws" / "articles.jsonl").open(encoding="utf-8") as handle:
        lines = [line for line in handle if json.loads(line)["id"] in ARTICLES]
    source.write_text("".join(lines), encoding="utf-8")
    store = VectorStore.open(data_dir=root / "qdrant")
    try:
        ingest(
            [source],
            store=store,
            collection=COLLECTION,
            chunker=get_chunker("window"),
            progress=False,
        )
    finally:
        store.close()
    return root / "qdrant"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(app, port: int):
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` in a thread until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def _serve_with_page(reranker, model_dir, **overrides):
    """``finerank serve --ui`` (``create_app``) on the loaded ``reranker``: (base, settings)."""
    from finerank.runtime import Runtime
    from finerank.server.app import create_app
    from finerank.settings import Settings

    settings = Settings(model=str(model_dir), ui=True, port=_free_port(), **overrides)
    runtime = Runtime(settings, reranker=reranker)
    runtime.start()
    app = create_app(runtime=runtime)
    try:
        with serving(app, settings.port) as base:
            yield base, settings
    finally:
        runtime.stop()


@pytest.fixture(scope="session")
def ui_server(qwen3_reranker, qwen3_reranker_dir, law_collection):
    """(base URL, settings) of a running server with the page at /ui."""
    with _serve_with_page(
        qwen3_reranker, qwen3_reranker_dir, data_dir=law_collection, max_documents_per_request=30
    ) as served:
        yield served


UI_KEY = "page-key-0123456789"


@pytest.fixture(scope="session")
def ui_keyed_server(qwen3_reranker, qwen3_reranker_dir, tmp_path_factory):
    """(base URL, settings) of ``finerank serve --ui --api-key UI_KEY``."""
    data_dir = tmp_path_factory.mktemp("keyed-data")
    with _serve_with_page(
        qwen3_reranker, qwen3_reranker_dir, api_keys=[UI_KEY], data_dir=data_dir
    ) as served:
        yield served


def _page_alone(qwen3_reranker_dir, **overrides):
    import tempfile

    from finerank.settings import Settings
    from finerank.ui.app import create_ui_app

    # the page's own store, not the user's data directory
    overrides.setdefault("data_dir", Path(tempfile.mkdtemp(prefix="finerank-ui-")) / "qdrant")
    settings = Settings(
        model=str(qwen3_reranker_dir), port=_free_port(), ui_max_pending_uploads=4, **overrides
    )
    return settings, create_ui_app(settings)


@pytest.fixture(scope="session")
def ui_alone_server(qwen3_reranker_dir):
    """(base URL, settings) of the page alone (``finerank ui``: ``create_ui_app``)."""
    settings, app = _page_alone(qwen3_reranker_dir)
    with serving(app, settings.port) as base:
        yield base, settings


@pytest.fixture(scope="session")
def ui_alone_keyed_server(qwen3_reranker_dir):
    """(base URL, settings) of ``finerank ui --api-key UI_KEY``."""
    settings, app = _page_alone(qwen3_reranker_dir, api_keys=[UI_KEY])
    with serving(app, settings.port) as base:
        yield base, settings


@pytest.fixture(scope="session")
def browser():
    executable = chromium_executable()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, ui_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.goto(f"{ui_server[0]}/ui/")
    opened.wait_for_selector("#fr-rerank-button", timeout=60_000)
    yield opened
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
