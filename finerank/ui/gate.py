"""ASGI gate in front of the mounted Gradio app: only the routes the page uses, bounded uploads.

Gradio serves far more than this page needs: ``/file=`` (any file in its shared cache, its
"static" paths, URLs fetched on the server's behalf), ``/proxy=``, media streams, run history,
monitoring, profiling. The page renders HTML and takes one upload, so the gate lets through
the page itself, its assets, its event API (queue, call, run) and the upload route, and answers
404 for everything else. ``/upload`` must declare its length (411 otherwise) and stay within
the upload limit (413, before a byte is read); after each upload, unread uploads beyond the
count limit are evicted.

Example:
    >>> is_page_route("/gradio_api/queue/join"), is_page_route("/gradio_api/file=/etc/passwd")
    (True, False)
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finerank.ui.uploads import REFUSED, UploadGuard

logger = logging.getLogger("finerank.ui")

UPLOAD_ROUTE = "/gradio_api/upload"
# Multipart framing around one file (boundaries, part headers, the file name).
_MULTIPART_OVERHEAD = 64 * 1024

_PAGE_ROUTES = re.compile(
    r"""^(?:
        /|/config/?|/info/?|/theme\.css|/robots\.txt|/manifest\.json|/favicon\.ico
      | /(?:assets|static|svelte)/[^?]*
      | /gradio_api/(?:
            info/?|config/?|theme\.css|startup-events|app_id/?|login_check/?|heartbeat/[\w-]+
          | queue/join|queue/data|cancel|upload|upload_progress
          | (?:call|call/v2|run|api)/[\w-]+/?|call/[\w-]+/[\w-]+
        )
    )$""",
    re.VERBOSE,
)


# Routes whose JSON body carries component values (where Gradio looks for file paths).
_EVENT_ROUTES = re.compile(r"^/gradio_api/(?:queue/join|(?:call|call/v2|run|api)/[\w-]+/?)$")


def is_page_route(path: str) -> bool:
    """Whether ``path`` (relative to the page's mount point) is one the page uses."""
    return bool(_PAGE_ROUTES.match(path))


class PageGate:
    """Wraps the Gradio app: unknown routes 404, uploads bounded, unread uploads evicted."""

    def __init__(self, app: ASGIApp, guard: UploadGuard, *, max_body_bytes: int):
        self.app = app
        self.guard = guard
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if not is_page_route(path) or (path == UPLOAD_ROUTE and scope["method"] != "POST"):
            logger.debug("page gate: refused %s %s", scope["method"], path)
            await _error(404, "not found", "not_found")(scope, receive, send)
            return
        if scope["method"] == "POST" and _EVENT_ROUTES.match(path):
            await self._event(scope, receive, send)
            return
        if path != UPLOAD_ROUTE:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await _error(411, "an upload must declare its Content-Length", "length_required")(
                scope, receive, send
            )
            return
        limit = self.guard.max_bytes + _MULTIPART_OVERHEAD
        if declared > limit:
            message = (
                f"upload too large: {declared} bytes > ui_max_upload_bytes="
                f"{self.guard.max_bytes} (plus {_MULTIPART_OVERHEAD} bytes of form framing)"
            )
            await _error(413, message, "limit_exceeded")(scope, receive, send)
            return

        async def send_after_eviction(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.guard.evict()  # before the client hears back: the bound always holds
            await send(message)

        try:
            await self.app(scope, receive, send_after_eviction)
        finally:
            self.guard.evict()

    async def _event(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an event whose values name any file this page did not receive; Gradio would
        copy such a file into its cache before any component code runs."""
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                text = f"request body over max_body_bytes={self.max_body_bytes}"
                await _error(413, text, "limit_exceeded")(scope, receive, send)
                return
        try:
            values = json.loads(body)
        except (ValueError, RecursionError):
            values = None  # not JSON: Gradio answers it (and reads no file)
        if not all(self.guard.received(path) for path in named_paths(values)):
            await _error(400, REFUSED, "invalid_request")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def named_paths(value: Any) -> list[object]:
    """Every ``path`` of every object in a JSON value (Gradio's file references have one).

    Example:
        >>> named_paths({"data": ["q", {"path": "/etc/passwd", "meta": {}}, [{"path": 1}]]})
        ['/etc/passwd', 1]
    """
    found: list[object] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item:
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found[::-1]


def _error(status: int, message: str, error_type: str) -> JSONResponse:
    body = {"error": {"type": error_type, "message": message, "code": status}, "detail": message}
    return JSONResponse(body, status_code=status)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if length >= 0 else None
    return None
