"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from assets shipped in the package.

FastAPI's defaults load both from a public CDN (and ReDoc's fonts from Google), which fails
offline and tells a third party who reads your docs. Here the pages load
``/docs-assets/swagger-ui/*`` and ``/docs-assets/redoc/*`` (vendored from the npm registry,
licences alongside; see ``static/README.md``), and Swagger UI's online validator badge is off.
The key gate (:mod:`finerank.server.security`) protects all of it under ``protect_health``.

Example:
    >>> from fastapi import FastAPI
    >>> app = FastAPI(docs_url=None, redoc_url=None)
    >>> install_api_docs(app)
    >>> sorted(r.path for r in app.routes if "doc" in r.path)
    ['/docs', '/docs-assets', '/docs/oauth2-redirect', '/redoc']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

ASSETS = Path(__file__).with_name("static")
ASSETS_PATH = "/docs-assets"
# The pages may load only from this server (ReDoc would fetch its logo from cdn.redoc.ly; its
# image hides itself when blocked). Inline scripts: Swagger UI's page boots from one.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def install_api_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and their assets to ``app``
    (created with ``docs_url=None, redoc_url=None``)."""
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _confined(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=title,
                swagger_js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
                oauth2_redirect_url="/docs/oauth2-redirect",
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _confined(
            get_redoc_html(
                openapi_url=openapi_url,
                title=title,
                redoc_js_url=f"{ASSETS_PATH}/redoc/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
                with_google_fonts=False,
            )
        )


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    page.headers["X-Frame-Options"] = "DENY"
    return page
