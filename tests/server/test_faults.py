"""Faults a server meets in the field (issue 11.6, 11.7): a client that never finishes its
body, a bug in a route, a full disk; each gives a clear answer and leaves the server serving."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def running(app) -> Iterator[int]:
    """``app`` served by a real uvicorn on a free loopback port (yields the port)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _read_response(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_body_that_never_finishes_is_dropped(make_app):
    """Headers promise 1000 bytes, 10 arrive, then nothing: 408 after body_timeout_s and the
    connection closed; meanwhile and afterwards other requests are answered."""
    app = make_app(body_timeout_s=1.0)
    with running(app) as port:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(
            b"POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"query": '
        )
        started = time.monotonic()
        # Served while the slow body is pending.
        with socket.create_connection(("127.0.0.1", port)) as other:
            other.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert _read_response(other, 10).startswith(b"HTTP/1.1 200")
        answer = _read_response(slow, 30)  # returns once the server closes the connection
        waited = time.monotonic() - started
        slow.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"connection: close" in head.lower()
        assert b"body_timeout_s" in body and b'"detail"' in body
        assert waited < 20  # dropped, not held until the client gives up
        with socket.create_connection(("127.0.0.1", port)) as after:
            after.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert _read_response(after, 10).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("pieces", [1, 4])
def test_a_body_in_pieces_within_the_timeout_is_served(make_app, pieces):
    app = make_app(body_timeout_s=10.0)
    body = b'{"query": "q", "documents": ["a", "b"]}'
    cuts = [len(body) * i // pieces for i in range(pieces + 1)]
    with running(app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        for start, end in zip(cuts, cuts[1:], strict=False):
            sock.sendall(body[start:end])
            time.sleep(0.1)
        answer = _read_response(sock, 30)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"relevance_score"' in answer


class BuggyEngine:
    """The real engine with a bug in ``prepare``: a bare ValueError naming internals."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def prepare(self, *args, **kwargs):
        raise ValueError("shape mismatch in /srv/finerank/secret_module.py")

    def prepare_steps(self, *args, **kwargs):
        raise ValueError("shape mismatch in /srv/finerank/secret_module.py")
        yield  # pragma: no cover - a generator, like the real one


async def test_a_bug_in_a_route_is_a_logged_500_without_internals(make_app, qwen3_reranker, caplog):
    import httpx

    from finerank.reranker import Reranker

    buggy = Reranker(BuggyEngine(qwen3_reranker.engine), name="tiny", path="", load_seconds=0)
    app = make_app(reranker=buggy)
    caplog.set_level("ERROR", logger="finerank.server.errors")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            response = await c.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
            assert (await c.get("/health")).status_code == 200
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["type"] == "internal_error" and body["detail"]
    assert "secret" not in response.text and "ValueError" not in response.text
    logged = [r for r in caplog.records if r.name == "finerank.server.errors"]
    assert logged and logged[0].exc_info and "secret_module" in str(logged[0].exc_info[1])


# Raw JSON bodies (lone surrogates need escapes a Python str cannot encode to UTF-8).
BAD_BODIES = {
    "/v1/rerank": [
        '{"query": "\\ud800", "documents": ["a"]}',
        '{"query": "q", "documents": ["\\udfff tail", "b"]}',
        '{"query": "q", "documents": ["a"], "instruction": "\\ud83d"}',
        '{"query": "q", "documents": [{"text": "\\ud800"}]}',
        '{"query": "q\\u0000", "documents": ["a\\u0000b"], "top_n": 0}',
        '{"query": "q", "documents": ["a"], "top_n": -1}',
        '{"query": "q", "documents": ["a"], "top_n": 1e400}',
        '{"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}',
        '{"query": "q", "documents": ["a"], "long_document": "bogus"}',
        '{"query": "q", "documents": [["a"]]}',
        '{"query": ["q"], "documents": ["a"]}',
        '{"query": "q", "documents": "a"}',
        '{"query": "' + "x" * 100 + '", "documents": []}',
    ],
    "/v2/rerank": ['{"query": "\\ud800", "documents": ["\\ud800"], "top_n": 1}'],
    "/rerank": ['{"query": "q", "texts": ["\\ud800"], "return_text": true}'],
    "/v1/score": [
        '{"text_1": "\\ud800", "text_2": ["a"]}',
        '{"text_1": ["a", "b"], "text_2": ["c"]}',
        '{"text_1": [1], "text_2": ["c"]}',
    ],
}


async def test_bad_input_is_a_4xx_never_a_500(make_app):
    """Each body is answered 2xx or 4xx with a message; none is a 500 (a bug)."""
    import httpx

    app = make_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            for route, bodies in BAD_BODIES.items():
                for body in bodies:
                    response = await c.post(
                        route, content=body, headers={"content-type": "application/json"}
                    )
                    assert response.status_code < 500, (route, body, response.text)
                    if response.status_code >= 400:
                        assert response.json()["detail"], (route, body)
