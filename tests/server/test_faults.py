"""Faults a server meets in the field (issue 11.6, 11.7): a client that never finishes its
body, a bug in a route, a full disk; each gives a clear answer and leaves the server serving."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def running(app) -> Iterator[int]:
    """``app`` served on a free loopback port as ``finerank serve`` runs it (yields the port)."""
    import uvicorn

    from finerank.server.protocol import uvicorn_config

    settings = app.state.runtime.settings
    config = uvicorn_config(app, settings, port=0, log_level="warning", lifespan="on")
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


def test_a_request_head_that_never_finishes_is_dropped(make_app):
    """A byte of header now and then (slowloris): closed header_timeout_s after it opened,
    however often bytes arrive; a connection that finishes its head in time is served."""
    app = make_app(header_timeout_s=1.0)
    with running(app) as port:
        slow = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        slow.sendall(b"POST /v1/rerank HTTP/1.1\r\n")
        closed = False
        for _ in range(60):  # a header byte every 0.1 s for up to 6 s
            try:
                slow.sendall(b"X")
                time.sleep(0.1)
            except OSError:  # reset: the server closed it
                closed = True
                break
            slow.settimeout(0.001)
            with contextlib.suppress(TimeoutError, BlockingIOError):
                if slow.recv(1) == b"":
                    closed = True
                    break
        waited = time.monotonic() - started
        slow.close()
        assert closed and waited < 5, waited
        with socket.create_connection(("127.0.0.1", port)) as ok:
            ok.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert _read_response(ok, 10).startswith(b"HTTP/1.1 200")


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


class DiskFillingStore:
    """The real store, except that upserts after the first ``allowed`` fail as a full disk
    does (``ENOSPC``) while ``full`` is set."""

    def __init__(self, store, allowed: int):
        self._store = store
        self.allowed = allowed
        self.upserts = 0
        self.full = True

    def __getattr__(self, name):
        return getattr(self._store, name)

    def upsert(self, collection, points):
        import errno

        self.upserts += 1
        if self.full and self.upserts > self.allowed:
            raise OSError(errno.ENOSPC, "No space left on device", "segment.mmap")
        return self._store.upsert(collection, points)


def _articles(count: int) -> list[dict]:
    return [
        {
            "id": f"a{i}",
            "text": f"第{i}条 违反本法规定的，处{i}万元以下罚款。",
            "metadata": {"n": i},
        }
        for i in range(count)
    ]


async def _ready(client) -> None:
    for _ in range(600):
        if (await client.get("/health")).status_code == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never ready")


async def test_a_full_disk_during_ingest_is_a_507_and_a_rerun_converges(
    qwen3_reranker, qwen3_reranker_dir, tmp_path
):
    """The store fails its second batch with ENOSPC: 507 saying "no space left on device";
    the same request once space is back gives the collection an uninterrupted run gives."""
    from finerank.retrieval.store import VectorStore
    from finerank.runtime import Runtime
    from finerank.server.app import create_app
    from tests.server.conftest import asgi_client, tiny_settings

    documents = _articles(150)  # three batches of 64 chunks
    store = DiskFillingStore(VectorStore.open(data_dir=tmp_path / "qdrant"), allowed=1)
    settings = tiny_settings(qwen3_reranker_dir, data_dir=tmp_path / "qdrant")
    app = create_app(runtime=Runtime(settings, reranker=qwen3_reranker, store=store))
    path = "/v1/collections/{}/documents"
    try:
        async with asgi_client(app) as client:
            await _ready(client)
            full = await client.post(path.format("laws"), json={"documents": documents})
            assert full.status_code == 507, full.text
            assert full.json()["error"]["type"] == "insufficient_storage"
            assert "no space left on device" in full.json()["detail"]
            assert "segment.mmap" not in full.text  # no internals
            store.full = False
            again = await client.post(path.format("laws"), json={"documents": documents})
            assert again.status_code == 200, again.text
            fresh = await client.post(path.format("fresh"), json={"documents": documents})
            assert fresh.status_code == 200, fresh.text
            assert again.json()["added"] == 150 - 64 and fresh.json()["added"] == 150
    finally:
        store.close()
    reopened = VectorStore.open(data_dir=tmp_path / "qdrant")
    try:
        points = {
            name: sorted((p.chunk_id, p.payload["text"]) for p in reopened.iter_points(name))
            for name in ("laws", "fresh")
        }
    finally:
        reopened.close()
    assert points["laws"] == points["fresh"] and len(points["laws"]) == 150


async def test_ingest_stops_before_the_disk_is_full(qwen3_reranker, qwen3_reranker_dir, tmp_path):
    """Free space under ``min_free_disk_mb`` (here: more than any disk has) is a 507 before a
    byte is written; embedded Qdrant would otherwise die of SIGBUS on a full disk."""
    from finerank.runtime import Runtime
    from finerank.server.app import create_app
    from tests.server.conftest import asgi_client, tiny_settings

    settings = tiny_settings(
        qwen3_reranker_dir, data_dir=tmp_path / "qdrant", min_free_disk_mb=10**12
    )
    app = create_app(runtime=Runtime(settings, reranker=qwen3_reranker))
    async with asgi_client(app) as client:
        await _ready(client)
        refused = await client.post(
            "/v1/collections/laws/documents", json={"documents": _articles(3)}
        )
        assert refused.status_code == 507, refused.text
        assert refused.json()["detail"].startswith("no space left on device for the store in")
        assert "min_free_disk_mb" in refused.json()["detail"]
        listed = await client.get("/v1/collections")
        assert listed.json()["collections"] == []


def test_finerank_index_on_a_full_disk_says_so_and_exits_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from finerank.cli import app

    (tmp_path / "a.txt").write_text("第一条 网络安全。\n", encoding="utf-8")
    monkeypatch.setenv("FINERANK_MIN_FREE_DISK_MB", str(10**12))
    args = ["index", str(tmp_path / "a.txt"), "-c", "laws", "--data-dir", str(tmp_path / "q")]
    result = CliRunner().invoke(app, [*args, "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device"), lines
    monkeypatch.setenv("FINERANK_MIN_FREE_DISK_MB", "0")
    assert CliRunner().invoke(app, [*args, "-q"]).exit_code == 0


async def test_a_failing_request_in_a_merged_batch_fails_alone_over_http(
    make_app, small_vocab_reranker, caplog
):
    """Three requests merged into one forward pass, one of them with words the model cannot
    embed: that one is a logged 500, the other two are answered with their own scores."""
    import httpx

    from finerank.reranker import Reranker
    from tests.server.conftest import GatedEngine

    engine = GatedEngine(small_vocab_reranker.engine)
    reranker = Reranker(engine, name="tiny", path=small_vocab_reranker.path, load_seconds=0.0)
    app = make_app(reranker=reranker, batch_wait_ms=0)
    good = ["the of and in", "a the a"]
    bodies = [
        {"query": "the", "documents": good},
        {"query": "the", "documents": ["zebra crossing"]},  # ids past the table: IndexError
        {"query": "of", "documents": good},
    ]
    caplog.set_level("ERROR", logger="finerank.server.errors")
    async with app.router.lifespan_context(app):
        service = app.state.runtime.rerank
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            engine.gate.clear()
            first = asyncio.create_task(c.post("/v1/rerank", json=bodies[0]))
            assert await asyncio.to_thread(engine.entered.wait, 10)
            tasks = [asyncio.create_task(c.post("/v1/rerank", json=b)) for b in bodies]
            while service.queued_pairs < 5:
                await asyncio.sleep(0.01)
            engine.gate.set()
            assert (await first).status_code == 200
            answers = await asyncio.gather(*tasks)
    assert [a.status_code for a in answers] == [200, 500, 200], [a.text for a in answers]
    assert engine.run_sizes[1] == 5  # the three were merged, then re-run one by one
    for body, answer in zip((bodies[0], bodies[2]), (answers[0], answers[2]), strict=True):
        want = small_vocab_reranker.rerank(body["query"], body["documents"])
        got = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
        assert [got[r.index] for r in want] == pytest.approx([r.score for r in want], abs=1e-6)
    assert "IndexError" not in answers[1].text and answers[1].json()["detail"]
    assert any(r.exc_info and isinstance(r.exc_info[1], IndexError) for r in caplog.records)


RETRIEVAL_BAD_BODIES = {
    "/v1/collections/laws/documents": [
        {"documents": ["x"], "chunker_options": {"bogus": 1}},
        {"documents": ["x"], "chunker_options": {"max_tokens": "a"}},
        {"documents": ["x"], "chunker_options": {"overlap": [1]}},
        {"documents": ["x"], "chunker": "legal", "chunker_options": {"max_chars": 1.5}},
        {"documents": [{"text": "x", "metadata": {"n": 2**64}}]},
    ],
    "/v1/search": [
        {"collection": "laws", "query": "罚款", "mode": "bm25", "filters": {"n": 2**70}},
        {"collection": "laws", "query": "罚款", "mode": "bm25", "filters": {"": 1}},
        {"collection": "laws\n", "query": "罚款", "mode": "bm25"},
    ],
}


async def test_bad_retrieval_input_is_a_4xx_naming_what_to_fix(
    qwen3_reranker, qwen3_reranker_dir, tmp_path
):
    import httpx

    from finerank.runtime import Runtime
    from finerank.server.app import create_app
    from tests.server.conftest import tiny_settings

    settings = tiny_settings(qwen3_reranker_dir, data_dir=tmp_path / "qdrant")
    app = create_app(runtime=Runtime(settings, reranker=qwen3_reranker))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            await _ready(c)
            added = await c.post("/v1/collections/laws/documents", json={"documents": ["罚款"]})
            assert added.status_code == 200, added.text
            for route, bodies in RETRIEVAL_BAD_BODIES.items():
                for body in bodies:
                    response = await c.post(route, json=body)
                    assert 400 <= response.status_code < 500, (route, body, response.text)
                    detail = response.json()["detail"]
                    assert "__init__" not in detail and "not supported between" not in detail


async def test_embeddings_given_token_ids_say_to_send_text(make_app, tmp_path):
    """langchain-openai sends token ids unless check_embedding_ctx_length=False."""
    from tests.server.conftest import asgi_client

    async with asgi_client(make_app(data_dir=tmp_path / "qdrant")) as client:
        for ids in ([1, 2, 3], [[1, 2], [3]]):
            response = await client.post("/v1/embeddings", json={"input": ids})
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert "send text instead" in detail and "check_embedding_ctx_length=False" in detail
