"""The web page (gradio): a Rerank tab and a two-stage Search tab.

Mounted at ``/ui`` by ``finerank serve --ui`` (:func:`mount_ui`, same process, same
:class:`~finerank.runtime.Runtime` as the HTTP API) or served alone by ``finerank ui``
(:func:`create_ui_app`, its own runtime). Every action calls the runtime's services
in-process (:class:`~finerank.ui.backend.UIBackend`), never the HTTP API.

Example:
    >>> from finerank.settings import Settings
    >>> app = create_ui_app(Settings(model="/models/Qwen3-Reranker-0.6B"))  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=7860)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finerank.errors import FinerankError, InvalidInputError, is_disk_full
from finerank.models.template import DEFAULT_INSTRUCTION
from finerank.settings import Settings
from finerank.ui import render
from finerank.ui.backend import UIBackend
from finerank.ui.uploads import UploadedFile, UploadGuard, confine_blocks, upload_component

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI

logger = logging.getLogger("finerank.ui")

EXAMPLES_FILE = Path(__file__).with_name("examples.json")
SEARCH_MODES = ("bm25", "dense", "hybrid", "bm25+prf", "hybrid+prf")
UPLOAD_TYPES = (".txt", ".jsonl")


@lru_cache(maxsize=1)
def example() -> dict[str, Any]:
    """The prefilled legal example: query, instruction and a few Cybersecurity Law articles."""
    return json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))


def example_documents() -> str:
    """The example articles, one per line (an article's paragraphs joined by a space)."""
    return "\n".join(
        f"{a['article_cn']} {' '.join(a['text'].split())}" for a in example()["articles"]
    )


def parse_documents(text: str) -> list[str]:
    """The documents in the text box: one per line, blank lines skipped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def documents_from_upload(upload: UploadedFile) -> tuple[list[str], str]:
    """The documents of an uploaded ``.txt`` (one per line) or ``.jsonl`` (``text`` field),
    and a note saying where they came from."""
    from finerank.jsonl import parse_documents_text

    name = Path(upload.name).name
    if Path(name).suffix.lower() not in UPLOAD_TYPES:
        raise InvalidInputError(f"upload a .txt or .jsonl file, not {name}")
    try:
        text = upload.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{name} is not UTF-8 text") from None
    documents = parse_documents_text(text, name)
    return documents, f"{len(documents)} documents from {name}"


def _box_text(documents: list[str]) -> tuple[str, bool]:
    """The documents one per line for the box (line breaks inside one become spaces)."""
    lines = [" ".join(document.split()) for document in documents]
    changed = any(line != document for line, document in zip(lines, documents, strict=True))
    return "\n".join(line for line in lines if line), changed


def _top_n(value: float | None) -> int | None:
    if value is None or value == 0:
        return None
    return _whole(value, "top_n", "(or empty for all)")


def _whole(value: float | None, name: str, hint: str = "") -> int:
    """A number box's value as an integer >= 1, or :class:`InvalidInputError`."""
    if (
        not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 1
        or int(value) != value
    ):
        hint = f" {hint}" if hint else ""
        raise InvalidInputError(f"{name} must be a whole number >= 1{hint}, got {value}")
    return int(value)


def _failure(exc: Exception) -> str:
    """What the page shows for an error: the message of a domain error; for anything else (a
    bug) a notice, with the traceback in the server log, like the API's logged 500."""
    if isinstance(exc, FinerankError):
        return str(exc)
    if is_disk_full(exc):
        return "no space left on device on the server"
    logger.error("page event failed", exc_info=exc)
    return "internal error (see the server log)"


def build_blocks(
    backend: UIBackend, guard: UploadGuard, *, collection: str | None = None
) -> gr.Blocks:
    """The page: a Rerank tab and a Search tab, wired to ``backend``; uploads go through
    ``guard``."""
    import gradio as gr

    ex = example()

    def load_upload(upload: UploadedFile | None):
        if upload is None:
            return gr.update(), "", None
        try:
            documents, origin = documents_from_upload(upload)
        except FinerankError as exc:
            return gr.update(), render.message(str(exc)), None
        limit = backend.settings.max_documents_per_request
        if len(documents) > limit:
            message = f"too many documents: {len(documents)} > max_documents_per_request={limit}"
            return gr.update(), render.message(message), None
        text, flattened = _box_text(documents)
        note = f"{origin} are in the box, one per line"
        if flattened:
            note += " (line breaks inside a document became spaces)"
        return text, render.message(note + "; press Rerank", kind="info"), None

    async def do_rerank(query, instruction, documents_text, top_n, long_document):
        instruction = (instruction or "").strip() or None
        try:
            documents = parse_documents(documents_text)
            results = await backend.rerank(
                query or "",
                documents,
                instruction=instruction,
                top_n=_top_n(top_n),
                long_document=long_document,
            )
        except Exception as exc:  # noqa: BLE001 - shown as a message, bugs logged
            return render.message(_failure(exc))
        shown = f"“{instruction}”" if instruction else "the default"
        note = f"{len(documents)} documents ranked; instruction: {shown}"
        if long_document == "chunk":
            note += "; the highlighted span is the window that scored best"
        return render.rerank_table(results, note=note)

    async def refresh_collections():
        try:
            names = await backend.collections()
        except FinerankError as exc:
            return gr.update(choices=[], value=None), render.message(str(exc))
        if not names:
            return gr.update(choices=[], value=None), render.message(
                "No collection yet: build one with `finerank index --collection NAME FILES...` "
                f"(into {backend.store_location()}; or POST /v1/collections/NAME/documents), "
                "then press Refresh.",
                kind="info",
            )
        value = collection if collection in names else names[0]
        return gr.update(choices=names, value=value), ""

    async def do_search(name, query, instruction, mode, recall_k, top_n):
        try:
            outcome = await backend.search(
                name or "",
                query or "",
                instruction=(instruction or "").strip() or None,
                mode=mode,
                recall_k=_whole(recall_k or 50, "recall_k"),
                top_n=_whole(top_n or 10, "top_n"),
            )
        except Exception as exc:  # noqa: BLE001 - shown as a message, bugs logged
            return render.message(_failure(exc))
        note = (
            f"{outcome.candidates} candidates from {mode}, all reranked; "
            f"showing the top {len(outcome.reranked)} of each order"
        )
        return render.search_columns(outcome.first_stage, outcome.reranked, note=note)

    with gr.Blocks(title="finerank", analytics_enabled=False) as blocks:
        gr.Markdown("## finerank: rerank and search")
        status = gr.Markdown(backend.model_status(), elem_id="fr-status")
        with gr.Tabs():
            with gr.Tab("Rerank", id="rerank"):
                with gr.Row():
                    with gr.Column(scale=1):
                        query = gr.Textbox(
                            label="Query", value=ex["query"], lines=2, elem_id="fr-query"
                        )
                        instruction = gr.Textbox(
                            label="Instruction",
                            value=ex["instruction"],
                            lines=2,
                            elem_id="fr-instruction",
                            info=f"Empty = the default: {DEFAULT_INSTRUCTION}",
                        )
                        documents = gr.Textbox(
                            label="Documents (one per line)",
                            value=example_documents(),
                            lines=10,
                            max_lines=30,
                            elem_id="fr-documents",
                        )
                        upload = upload_component(
                            guard,
                            label="…or upload a .txt / .jsonl (fills the box)",
                            file_types=list(UPLOAD_TYPES),
                            elem_id="fr-upload",
                        )
                        upload_note = gr.HTML(elem_id="fr-upload-note")
                        with gr.Row():
                            top_n = gr.Number(
                                label="top_n (0 = all)",
                                value=0,
                                precision=0,
                                minimum=0,
                                elem_id="fr-top-n",
                            )
                            long_document = gr.Radio(
                                ["truncate", "chunk"],
                                value="truncate",
                                label="Long documents",
                                elem_id="fr-long-document",
                            )
                        rerank_button = gr.Button(
                            "Rerank", variant="primary", elem_id="fr-rerank-button"
                        )
                    with gr.Column(scale=1):
                        rerank_output = gr.HTML(elem_id="fr-rerank-output")
                rerank_button.click(
                    do_rerank,
                    [query, instruction, documents, top_n, long_document],
                    rerank_output,
                )
                upload.upload(
                    load_upload, upload, [documents, upload_note, upload], api_name="upload"
                )
                # The example's instruction belongs to the example's query: another
                # query clears it (when untouched) so it is never applied to a user's own query.
                query.change(
                    None, [query, instruction], instruction, js=_clear_example_instruction(ex)
                )
            with gr.Tab("Search", id="search"):
                with gr.Row():
                    collection_box = gr.Dropdown(
                        label="Collection", choices=[], elem_id="fr-collection", scale=3
                    )
                    refresh = gr.Button("Refresh", elem_id="fr-refresh", scale=1)
                search_query = gr.Textbox(
                    label="Query", value=ex["query"], lines=2, elem_id="fr-search-query"
                )
                search_instruction = gr.Textbox(
                    label="Instruction", value=ex["instruction"], elem_id="fr-search-instruction"
                )
                with gr.Row():
                    mode = gr.Radio(
                        list(SEARCH_MODES), value="bm25", label="Recall mode", elem_id="fr-mode"
                    )
                    recall_k = gr.Number(
                        label="recall_k", value=50, precision=0, minimum=1, elem_id="fr-recall-k"
                    )
                    search_top_n = gr.Number(
                        label="shown", value=10, precision=0, minimum=1, elem_id="fr-search-top-n"
                    )
                search_query.change(
                    None,
                    [search_query, search_instruction],
                    search_instruction,
                    js=_clear_example_instruction(ex),
                )
                search_button = gr.Button("Search", variant="primary", elem_id="fr-search-button")
                search_output = gr.HTML(elem_id="fr-search-output")
                search_button.click(
                    do_search,
                    [
                        collection_box,
                        search_query,
                        search_instruction,
                        mode,
                        recall_k,
                        search_top_n,
                    ],
                    search_output,
                )
                refresh.click(refresh_collections, None, [collection_box, search_output])
        blocks.load(refresh_collections, None, [collection_box, search_output])
        blocks.load(backend.model_status, None, status)
    return blocks


def _clear_example_instruction(ex: dict[str, Any]) -> str:
    """Browser-side: ``(query, instruction) -> instruction``, emptied when the query is no
    longer the example's and the instruction still is."""
    query, instruction = json.dumps(ex["query"]), json.dumps(ex["instruction"])
    return f"(q, i) => (i === {instruction} && q !== {query}) ? '' : i"


def _theme():
    import gradio as gr

    # System fonts: the page must not fetch web fonts (no network where finerank runs).
    return gr.themes.Default(
        font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


def mount_ui(
    app: FastAPI,
    backend: UIBackend,
    settings: Settings,
    *,
    path: str = "/ui",
    collection: str | None = None,
) -> UIBackend:
    """Mount the page on ``app`` at ``path``; it calls ``backend`` (the runtime's services)
    in-process.

    Example:
        >>> mount_ui(app, UIBackend(runtime), runtime.settings)  # doctest: +SKIP
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    guard = UploadGuard(
        max_bytes=settings.ui_max_upload_bytes, max_pending=settings.ui_max_pending_uploads
    )
    blocks = build_blocks(backend, guard, collection=collection)
    gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        theme=_theme(),
        css=render.CSS,
        footer_links=[],
        run_history=False,
        enable_monitoring=False,
        server_name=settings.host,
        server_port=settings.port,
        ssr_mode=False,
        max_file_size=settings.ui_max_upload_bytes,
    )
    _confine_uploads(app, path, blocks, guard, max_body_bytes=settings.max_body_bytes)
    app.state.ui_backend = backend
    return backend


def _confine_uploads(
    app: FastAPI, path: str, blocks: gr.Blocks, guard: UploadGuard, *, max_body_bytes: int
) -> None:
    """Point the mounted Gradio app at the page's private upload directory, put the
    :class:`~finerank.ui.gate.PageGate` in front of it and delete the directory at shutdown."""
    from gradio.routes import App
    from starlette.routing import Mount

    from finerank.ui.gate import PageGate

    mounts = [r for r in app.routes if isinstance(r, Mount) and r.path == path.rstrip("/")]
    if len(mounts) != 1 or not isinstance(mounts[0].app, App):
        raise RuntimeError(f"the page's Gradio app is not mounted at {path}")
    gradio_app = mounts[0].app
    gradio_app.uploaded_file_dir = str(guard.directory)
    confine_blocks(blocks, guard)
    mounts[0].app = PageGate(gradio_app, guard, max_body_bytes=max_body_bytes)

    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(parent: FastAPI) -> AsyncIterator[Any]:
        try:
            async with previous(parent) as state:
                yield state
        finally:
            guard.close()

    app.router.lifespan_context = lifespan


def create_ui_app(
    settings: Settings,
    *,
    collection: str | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The page alone (``finerank ui``): its own runtime (the store defaults to the user data
    directory, where ``finerank index`` writes; at ``app.state.runtime``), loaded in the
    background; serves ``/ui`` and redirects ``/`` there.

    ``on_load_error(exc)`` is called if a component fails to load (the CLI then exits 2);
    without it the failure is logged and the page shows it."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    from finerank.retrieval.store import default_data_dir
    from finerank.runtime import Runtime, store_configured
    from finerank.server.security import install_security

    if not store_configured(settings):
        settings = settings.model_copy(update={"data_dir": default_data_dir()})
    runtime = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        async def load() -> None:
            try:
                await asyncio.to_thread(runtime.start)
            except Exception as exc:  # noqa: BLE001 - the page shows what failed
                if on_load_error is not None:
                    on_load_error(exc)
                else:
                    logger.error("failed to load: %s", exc)

        loader = asyncio.create_task(load())
        try:
            yield
        finally:
            await asyncio.shield(loader)
            await asyncio.to_thread(runtime.stop, drain=True)

    # No API docs: the page's app has no API of its own.
    app = FastAPI(
        title="finerank ui", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.state.runtime = runtime
    mount_ui(app, UIBackend(runtime), settings, collection=collection)
    install_security(app, settings)
    return app
