"""Keys, sessions, Host and CORS checks of the real app (in-process ASGI client)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from finerank.settings import Settings
from tests.server.conftest import asgi_client

KEY = "sec-key-0123456789abcdef"
RERANK = {"query": "q", "documents": ["a", "b"]}


async def test_foreign_host_headers_are_refused_on_loopback(make_app):
    app = make_app()  # bound to 127.0.0.1 (the default)
    async with asgi_client(app) as c:
        for host in ("localhost", "localhost:8000", "127.0.0.1:9", "[::1]:8000", "LOCALHOST"):
            answer = await c.get("/v1/models", headers={"host": host})
            assert answer.status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]"):
            answer = await c.post("/v1/rerank", json=RERANK, headers={"host": host})
            assert answer.status_code == 400, host
            assert answer.json()["error"]["type"] == "invalid_host"
            assert "FINERANK_ALLOWED_HOSTS" in answer.json()["detail"]
    named = make_app(allowed_hosts=["rerank.internal"])
    async with asgi_client(named) as c:
        assert (await c.get("/v1/models", headers={"host": "rerank.internal:80"})).is_success
        assert (await c.get("/v1/models", headers={"host": "other.internal"})).status_code == 400
    public = make_app(host="0.0.0.0")  # reachable from elsewhere: names are the proxy's job
    async with asgi_client(public) as c:
        assert (await c.get("/v1/models", headers={"host": "rerank.example"})).is_success


async def test_no_cross_origin_reads_by_default(make_app):
    app = make_app(ui=True)
    async with asgi_client(app) as c:
        evil = {"origin": "https://evil.example"}
        for path in ("/v1/models", "/ui/config"):
            answer = await c.get(path, headers=evil)
            assert answer.status_code == 200
            assert "access-control-allow-origin" not in answer.headers, path
            assert "access-control-allow-credentials" not in answer.headers, path
        preflight = await c.options(
            "/ui/gradio_api/queue/join",
            headers={**evil, "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
    allowed = make_app(cors_origins=["https://app.example"])
    async with asgi_client(allowed) as c:
        answer = await c.get("/v1/models", headers={"origin": "https://app.example"})
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in answer.headers
        other = await c.get("/v1/models", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_login_form_gives_a_signed_strict_session(make_app):
    app = make_app(ui=True, api_keys=[KEY, "second-key-xyz"])
    async with asgi_client(app) as c:
        assert (await c.get("/ui/config")).status_code == 401
        form = await c.get("/login?next=/ui/")
        assert form.status_code == 200 and 'name="key"' in form.text
        assert form.headers["x-frame-options"] == "DENY"
        wrong = await c.post("/login", data={"key": "nope", "next": "/ui/"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "set-cookie" not in wrong.headers
        cross = await c.post(
            "/login", data={"key": KEY}, headers={"origin": "https://evil.example"}
        )
        assert cross.status_code == 403
        ok = await c.post("/login", data={"key": KEY, "next": "/ui/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert KEY not in cookie
        # the client keeps the cookie: the page now opens, the API still wants the bearer key
        assert (await c.get("/ui/config")).status_code == 200
        assert (await c.post("/v1/rerank", json=RERANK)).status_code == 401
        # a tampered session is no session
        value = c.cookies["finerank_session"]
        c.cookies.clear()
        c.cookies.set("finerank_session", value[:-2] + ("00" if value[-2:] != "00" else "11"))
        assert (await c.get("/ui/config")).status_code == 401
        c.cookies.clear()
        # never sent off-site after login
        away = await c.post("/login", data={"key": KEY, "next": "//evil.example/x"})
        assert away.headers["location"] == "/"
        out = await c.get("/logout")
        assert out.status_code == 303 and "finerank_session=" in out.headers["set-cookie"]


async def test_a_bearer_key_on_the_page_also_sets_a_session(make_app):
    app = make_app(ui=True, api_keys=[KEY])
    async with asgi_client(app) as c:
        page = await c.get("/ui/", headers={"authorization": f"Bearer {KEY}"})
        assert page.status_code == 200 and "finerank_session=" in page.headers["set-cookie"]
        assert (await c.get("/ui/config")).status_code == 200  # with the cookie alone


async def test_sessions_die_with_their_key(make_app):
    first = make_app(ui=True, api_keys=[KEY])
    async with asgi_client(first) as c:
        await c.post("/login", data={"key": KEY})
        cookie = c.cookies["finerank_session"]
    same_keys = make_app(ui=True, api_keys=[KEY])  # another process with the same keys
    async with asgi_client(same_keys) as c:
        c.cookies.set("finerank_session", cookie)
        assert (await c.get("/ui/config")).status_code == 200
    rotated = make_app(ui=True, api_keys=["a-new-key-0000"])
    async with asgi_client(rotated) as c:
        c.cookies.set("finerank_session", cookie)
        assert (await c.get("/ui/config")).status_code == 401


@pytest.mark.parametrize("protect", [False, True])
async def test_docs_follow_protect_health(make_app, protect):
    app = make_app(api_keys=[KEY], protect_health=protect)
    async with asgi_client(app) as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/health", "/metrics"):
            c.cookies.clear()  # a keyed HTML answer sets a session cookie
            anonymous = await c.get(path)
            assert anonymous.status_code == (401 if protect else 200), path
            keyed = await c.get(path, headers={"authorization": f"Bearer {KEY}"})
            assert keyed.status_code == 200, path


def test_empty_keys_are_refused(monkeypatch):
    for bad in ([""], ["  "], ["ok-key", ""], ["has space"]):
        with pytest.raises(ValueError, match="API key"):
            Settings(api_keys=bad)
    for raw in (" , ", "", ",", "k1,,k2"):
        monkeypatch.setenv("FINERANK_API_KEYS", raw)
        with pytest.raises(ValueError, match="an API key is empty"):
            Settings()
    monkeypatch.setenv("FINERANK_API_KEYS", " k1 , k2 ")
    assert Settings().api_keys == ["k1", "k2"]


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["serve", "--model", "MODEL", "--api-key", ""], {}),
        (["ui", "--api-key", ""], {}),
        (["serve", "--model", "MODEL"], {"FINERANK_API_KEYS": " , "}),
        (["ui"], {"FINERANK_API_KEYS": " , "}),
    ],
)
def test_cli_refuses_empty_keys_at_start(qwen3_reranker_dir, command, env):
    argv = [str(qwen3_reranker_dir) if part == "MODEL" else part for part in command]
    done = subprocess.run(
        [sys.executable, "-c", "from finerank.cli import main; main()", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), **env},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "an API key is empty" in lines[0], done.stderr


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FINERANK_")}


async def test_api_docs_come_from_the_package(make_app):
    import re

    app = make_app()
    async with asgi_client(app) as c:
        for path, assets in (
            ("/docs", ["swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css"]),
            ("/redoc", ["redoc/redoc.standalone.js"]),
        ):
            page = await c.get(path)
            assert page.status_code == 200
            # nothing outside this server: no CDN, no web fonts, no validator badge
            assert not re.findall(r"(?:src|href)=['\"]https?://", page.text), path
            assert "fonts.googleapis" not in page.text and "cdn.jsdelivr" not in page.text
            for asset in assets:
                assert f"/docs-assets/{asset}" in page.text
                served = await c.get(f"/docs-assets/{asset}")
                assert served.status_code == 200 and len(served.content) > 100_000, asset
        assert '"validatorUrl": null' in (await c.get("/docs")).text
        for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
            assert (await c.get(f"/docs-assets/{licence}")).status_code == 200
    protected = make_app(api_keys=[KEY], protect_health=True)
    async with asgi_client(protected) as c:
        assert (await c.get("/docs-assets/swagger-ui/swagger-ui.css")).status_code == 401
