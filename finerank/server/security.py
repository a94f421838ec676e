"""ASGI middleware in front of every finerank app (the HTTP API, the page, both together).

* :class:`HostGuard`: on a loopback bind only ``localhost`` / ``127.0.0.1`` / ``[::1]`` (any
  port) may appear in ``Host``, so a web page on another site cannot reach the server through
  a DNS name that it re-points at 127.0.0.1 (DNS rebinding). ``allowed_hosts`` widens that.
* :class:`KeyGate`: with API keys set, nothing but the open paths (``/health`` and ``/metrics``
  and the API docs unless ``protect_health``; the login form) is served without a key. The
  key comes as ``Authorization: Bearer KEY`` or as a signed session cookie (HttpOnly,
  SameSite=Strict) that the login form (``/login``) or any bearer request sets. Browsers that
  navigate to a protected page are sent to the login form; other clients get a ``401``.
* CORS: a Starlette ``CORSMiddleware`` with no allowed origin unless ``cors_origins`` names
  some, never with credentials. Its presence also stops Gradio from adding its own CORS
  headers, which reflect any origin with ``Access-Control-Allow-Credentials: true``.

Example:
    >>> sorted(allowed_host_names(Settings(host="127.0.0.1")))
    ['127.0.0.1', '::1', 'localhost']
    >>> allowed_host_names(Settings(host="0.0.0.0")) is None
    True
    >>> host_name("[::1]:8000"), host_name("LocalHost:7860"), host_name("127.0.0.1")
    ('::1', 'localhost', '127.0.0.1')
"""

from __future__ import annotations

import html
import ipaddress
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finerank.server.auth import SESSION_COOKIE, KeyChecker
from finerank.server.errors import error_response
from finerank.server.routing import TIMING_HEADERS
from finerank.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("finerank.server")

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json", "/docs-assets")
_MAX_FORM_BYTES = 4096


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the Host check, the key gate and the CORS policy to ``app`` (call once, last)."""
    from starlette.middleware.cors import CORSMiddleware

    # Added innermost first: HostGuard runs before everything, then CORS, then the key gate.
    app.add_middleware(KeyGate, settings=settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_credentials=False,
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["authorization", "content-type"],
        expose_headers=list(TIMING_HEADERS),  # browsers may read TEI's timing headers
    )
    app.add_middleware(HostGuard, allowed=allowed_host_names(settings), bound=settings.host)


# ---- Host ---------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_names(settings: Settings) -> frozenset[str] | None:
    """The ``Host`` names accepted (``None``: any)."""
    extra = {name.lower().strip("[]") for name in settings.allowed_hosts}
    if "*" in extra:
        return None
    if is_loopback(settings.host):
        return LOOPBACK_NAMES | extra
    return frozenset(extra) if extra else None


def host_name(header: str) -> str:
    """The name part of a ``Host`` header (no port, no IPv6 brackets), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """``400`` for a ``Host`` header naming anything but the allowed names."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None, bound: str):
        self.app = app
        self.allowed = allowed
        self.bound = bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        if header is None or host_name(header) in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        shown = header if len(header) <= 100 else header[:100] + "…"
        message = (
            f"Host {shown!r} is not allowed: this server is bound to {self.bound} and answers "
            "for localhost, 127.0.0.1 and [::1]; add the name to FINERANK_ALLOWED_HOSTS "
            "(--allowed-host) to serve it"
        )
        await error_response(400, message, "invalid_host")(scope, receive, send)


# ---- keys -----------------------------------------------------------------------------------
class KeyGate:
    """With keys set, every path but the open ones needs a bearer key or a session cookie."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.checker = KeyChecker(settings.api_keys)
        self.protect_health = settings.protect_health
        self.session_s = settings.session_hours * 3600.0

    def is_open(self, path: str) -> bool:
        """Paths served without a key."""
        if path in (LOGIN_PATH, LOGOUT_PATH):
            return True
        if self.protect_health:
            return False
        return path in ("/health", "/metrics") or any(
            path == prefix or path.startswith(prefix + "/") for prefix in DOCS_PATHS
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.checker.enabled or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["type"] == "http" and path == LOGIN_PATH:
            await self._login(scope, receive, send)
            return
        if scope["type"] == "http" and path == LOGOUT_PATH:
            response = RedirectResponse(LOGIN_PATH, status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict", httponly=True)
            await response(scope, receive, send)
            return
        headers = Headers(scope=scope)
        bearer = headers.get("authorization")
        if self.checker.valid_session(_cookie(headers, SESSION_COOKIE)):
            await self.app(scope, receive, send)
            return
        if bearer and self.checker.valid(bearer):
            key = bearer.strip().partition(" ")[2].strip()
            await self.app(scope, receive, self._with_session(scope, send, key))
            return
        if self.is_open(path):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
            target = path + (
                f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else ""
            )
            login = f"{LOGIN_PATH}?next={quote(target, safe='')}"
            await RedirectResponse(login, status_code=303)(scope, receive, send)
            return
        message = "missing or invalid API key: send 'Authorization: Bearer <key>'"
        response = error_response(
            401, message, "unauthorized", headers={"WWW-Authenticate": "Bearer"}
        )
        await response(scope, receive, send)

    def _with_session(self, scope: Scope, send: Send, key: str) -> Send:
        """Give a browser that sent a bearer key for a page a session cookie too."""
        cookie = self._cookie_header(
            scope, self.checker.issue_session(key, lifetime_s=self.session_s)
        )

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"set-cookie", cookie)]
            await send(message)

        return send_with_cookie

    def _cookie_header(self, scope: Scope, value: str) -> bytes:
        response = Response()
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(self.session_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=scope.get("scheme") == "https",
        )
        return response.headers["set-cookie"].encode("latin-1")

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        target = _safe_next(query.get("next", ["/"])[0])
        if scope["method"] in ("GET", "HEAD"):
            await _login_form(target)(scope, receive, send)
            return
        if scope["method"] != "POST":
            await error_response(405, "use GET or POST")(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if (
            origin
            and origin != "null"
            and host_name(urlsplit(origin).netloc) != host_name(headers.get("host", ""))
        ):
            await error_response(403, "cross-site login refused", "forbidden")(scope, receive, send)
            return
        body = await _read_small(receive, _MAX_FORM_BYTES)
        if body is None:
            await error_response(413, "login form too large")(scope, receive, send)
            return
        form = parse_qs(body.decode("utf-8", "replace"))
        key = form.get("key", [""])[0].strip()
        target = _safe_next(form.get("next", [target])[0])
        if not self.checker.valid_key(key):
            await _login_form(target, error="That key is not valid.", status=401)(
                scope, receive, send
            )
            return
        response = RedirectResponse(target, status_code=303)
        response.raw_headers.append(
            (
                b"set-cookie",
                self._cookie_header(
                    scope, self.checker.issue_session(key, lifetime_s=self.session_s)
                ),
            )
        )
        await response(scope, receive, send)


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _safe_next(target: str) -> str:
    """Only same-site paths (no ``//host``, no scheme) as the place to go after login."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _read_small(receive: Receive, limit: int) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _login_form(target: str, *, error: str = "", status: int = 200) -> HTMLResponse:
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>finerank: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:12vh auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;margin:.4rem 0 1rem;box-sizing:border-box}}
button{{padding:.5rem 1.2rem}} .error{{color:#8a1c12}}</style></head>
<body><h1>finerank</h1><p>This server needs an API key.</p>{notice}
<form method="post" action="{LOGIN_PATH}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{html.escape(target, quote=True)}">
<button type="submit">Sign in</button></form></body></html>"""
    headers = {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'",
    }
    return HTMLResponse(page, status_code=status, headers=headers)
