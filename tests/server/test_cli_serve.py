"""A real ``finerank serve`` subprocess on loopback: dialects, concurrency, disconnects, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import parse_metrics

QUERY = "Which city is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "France borders Spain."]
READY = re.compile(r"finerank ready: serving '([^']+)' on (http://127\.0\.0\.1:\d+)")


class Server:
    """A ``finerank serve`` child process, its base URL and its log lines."""

    def __init__(self, model_dir: Path, *flags: str, env: dict[str, str] | None = None):
        cmd = [
            sys.executable,
            "-c",
            "from finerank.cli import main; main()",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            "0",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            *flags,
        ]
        full_env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=full_env)
        self.lines: list[str] = []
        self.url = ""
        self.name = ""
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                match = READY.search(line)
                if match:
                    self.name, self.url = match.groups()
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(240) or not self.url:
            self.stop()
            raise AssertionError("server never became ready:\n" + "\n".join(self.lines[-20:]))

    def wait_line(self, text: str, timeout: float = 10) -> str:
        """The first log line holding ``text``, waiting for it: lines logged after the ready
        line may not have been read yet when the constructor returns."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in self.lines if text in line), None)
            if found is not None:
                return found
            assert time.monotonic() < deadline, (text, self.lines[-5:])
            time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(self.url + "/metrics", timeout=30).text)

    def wait_metric(self, name: str, at_least: float, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.metrics().get(name, 0.0)
            if value >= at_least:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{name} never reached {at_least}")

    def wait_model_busy(self) -> None:
        """Until a big request in flight is tokenized and its pairs wait for the model (big
        requests are tokenized in steps, and requests sent before that would go first)."""
        deadline = time.monotonic() + 120
        while True:
            metrics = self.metrics()
            if (
                metrics.get("finerank_preparing_requests", 0.0) == 0
                and metrics.get("finerank_queue_depth_pairs", 0.0) > 0
            ):
                return
            assert time.monotonic() < deadline, "the big request never reached the model"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def server(qwen3_reranker_dir):
    """One server for the module (the SIGTERM test, last, ends it); its API key comes from
    the environment and its name from a flag."""
    served = Server(
        qwen3_reranker_dir, "--served-model-name", "tiny", env={"FINERANK_API_KEYS": "s3cret"}
    )
    yield served
    served.stop()


def _long_docs(count: int, words: int) -> list[str]:
    vocab = [
        "river",
        "law",
        "court",
        "tax",
        "city",
        "energy",
        "water",
        "market",
        "bank",
        "school",
        "train",
        "music",
        "data",
    ]
    return [" ".join(vocab[(i + j) % len(vocab)] for j in range(words)) for i in range(count)]


def _scores(reranker, query, docs):
    return [round(r.score, 5) for r in sorted(reranker.rerank(query, docs), key=lambda r: r.index)]


def test_ready_line_and_loopback(server):
    assert server.name == "tiny" and server.url.startswith("http://127.0.0.1:")
    assert sum("finerank ready" in line for line in server.lines) == 1
    assert httpx.get(server.url + "/health").json() == {
        "status": "ok",
        "model": "tiny",
        "components": {"reranker": "ready"},
    }
    # the line after it says which dtype runs and which one is fastest on this CPU
    assert "fastest here: " in server.wait_line("finerank dtype float32 on CPU")


def test_every_dialect_returns_the_python_api_scores(server, qwen3_reranker):
    want = _scores(qwen3_reranker, QUERY, DOCS)
    assert (
        httpx.post(server.url + "/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code
        == 401
    )
    with httpx.Client(base_url=server.url, timeout=60, headers=KEY) as c:
        for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
            body = c.post(path, json={"model": "tiny", "query": QUERY, "documents": DOCS}).json()
            by_index = {r["index"]: round(r["relevance_score"], 5) for r in body["results"]}
            assert [by_index[i] for i in range(3)] == want, path
            scores = [r["relevance_score"] for r in body["results"]]
            assert scores == sorted(scores, reverse=True)
        tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
        assert [round(r["score"], 5) for r in sorted(tei, key=lambda r: r["index"])] == want
        score = c.post("/v1/score", json={"text_1": QUERY, "text_2": DOCS}).json()
        assert [round(d["score"], 5) for d in score["data"]] == want
        bad = c.post("/v1/rerank", content=b"{oops")
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]
        unknown = c.post("/v1/rerank", json={"model": "x", "query": QUERY, "documents": DOCS})
        assert unknown.status_code == 404 and "'tiny'" in unknown.json()["error"]["message"]


def test_fifty_concurrent_clients_each_get_their_own_answer(server, qwen3_reranker):
    queries = [
        f"query {i}: {' '.join(['city', 'tax', 'music', 'river'][: 1 + i % 4])}" for i in range(50)
    ]
    scores = qwen3_reranker.score([(q, d) for q in queries for d in DOCS])
    want = {q: [round(s, 5) for s in scores[3 * n : 3 * n + 3]] for n, q in enumerate(queries)}

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(
            base_url=server.url, limits=limits, timeout=120, headers=KEY
        ) as c:
            return await asyncio.gather(
                *(c.post("/v1/rerank", json={"query": q, "documents": DOCS}) for q in queries)
            )

    before = server.metrics().get("finerank_batch_requests_count", 0)
    responses = asyncio.run(run())
    for query, response in zip(queries, responses, strict=True):
        assert response.status_code == 200
        by_index = {r["index"]: round(r["relevance_score"], 5) for r in response.json()["results"]}
        assert [by_index[i] for i in range(3)] == want[query]
    assert server.metrics()["finerank_batch_requests_count"] - before < 50  # merged batches


def test_a_disconnecting_client_frees_its_queued_work(server):
    heavy = {"query": QUERY, "documents": _long_docs(600, 40), "return_documents": False}
    answer: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: answer.append(
            httpx.post(server.url + "/v1/rerank", json=heavy, headers=KEY, timeout=300)
        )
    )
    worker.start()
    # In flight: the heavy request and our own /metrics call; then it holds the model.
    server.wait_metric("finerank_in_flight_requests", 2)
    server.wait_model_busy()
    queued_before = server.metrics()["finerank_dropped_pairs"]
    body = json.dumps({"query": "leaving soon", "documents": _long_docs(50, 10)}).encode()
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cret\r\n"
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        server.wait_metric("finerank_queue_depth_pairs", 50)  # queued behind the heavy one
    # Socket closed: the server notices, cancels the request and drops its 50 pairs.
    server.wait_metric("finerank_client_disconnects_total", 1)
    worker.join(300)
    assert answer and answer[0].status_code == 200 and len(answer[0].json()["results"]) == 600
    assert server.wait_metric("finerank_dropped_pairs", queued_before + 50) >= queued_before + 50
    assert httpx.get(server.url + "/health").status_code == 200


def test_flags_win_over_environment_and_the_default_model(monkeypatch):
    from finerank.cli.serve import serve_settings
    from finerank.runtime import DEFAULT_RERANKER

    monkeypatch.setenv("FINERANK_MODEL", "/env/model")
    monkeypatch.setenv("FINERANK_PORT", "9000")
    settings, defaulted = serve_settings(model=None, port=8001, api_keys=["a", "b"], host=None)
    assert (settings.model, settings.port, settings.api_keys) == ("/env/model", 8001, ["a", "b"])
    assert settings.host == "127.0.0.1" and not defaulted
    monkeypatch.delenv("FINERANK_MODEL")
    settings, defaulted = serve_settings(model=None)
    assert (settings.model, defaulted) == (DEFAULT_RERANKER, True)


def test_no_model_serves_the_default_reranker_from_the_local_cache(tmp_path, qwen3_reranker_dir):
    """With no --model, `finerank serve` serves Qwen/Qwen3-Reranker-0.6B from the Hugging Face
    cache, offline (here a cache holding the tiny test model under that id)."""
    import shutil

    snapshot = tmp_path / "hf" / "hub" / "models--Qwen--Qwen3-Reranker-0.6B"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(qwen3_reranker_dir, snapshot / "snapshots" / commit)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text(commit)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    env.pop("FINERANK_MODEL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from finerank.cli import main; main()", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = READY.search(line)
            if match:
                break
        else:
            raise AssertionError("the server exited before it was ready")
        name, url = match.groups()
        assert name == "Qwen3-Reranker-0.6B"
        body = {"query": QUERY, "documents": DOCS}
        answer = httpx.post(url + "/v1/rerank", json=body, timeout=60).json()
        assert answer["model"] == "Qwen3-Reranker-0.6B" and len(answer["results"]) == 3
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def test_no_model_and_no_hub_is_one_message_naming_make_test_model(tmp_path):
    """Offline, with an empty Hugging Face cache, `finerank serve` says what to do in one line
    and exits 2 before opening a port."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env.pop("FINERANK_MODEL", None)
    done = subprocess.run(
        [sys.executable, "-c", "from finerank.cli import main; main()", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Qwen/Qwen3-Reranker-0.6B" in errors[0]
    assert "finerank make-test-model DIR" in errors[0] and "--model DIR" in errors[0]
    assert "Uvicorn running" not in done.stderr and "Traceback" not in done.stderr


def test_failed_model_load_exits_2_with_the_reason(tmp_path, capsys):
    from finerank.cli.serve import run_server
    from finerank.settings import Settings

    before = signal.getsignal(signal.SIGTERM)
    assert run_server(Settings(model=str(tmp_path / "nope"), port=0)) == 2
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    err = capsys.readouterr().err
    assert "reranker failed to load" in err and "not found" in err


def test_sigterm_answers_in_flight_requests_then_exits(server, qwen3_reranker):
    """Runs last in this module: it shuts the module's server down."""
    docs = _long_docs(20, 30)
    queries = [f"in flight {i}" for i in range(5)]
    results: dict[str, httpx.Response] = {}

    def call(query: str, documents: list[str]) -> None:
        results[query] = httpx.post(
            server.url + "/v2/rerank",
            json={"query": query, "documents": documents, "top_n": 3},
            headers=KEY,
            timeout=300,
        )

    # A long request holds the model; the small ones queue behind it, so all are in flight.
    heavy = threading.Thread(target=call, args=("heavy", _long_docs(1000, 40)))
    heavy.start()
    server.wait_metric("finerank_in_flight_requests", 2)
    server.wait_model_busy()
    threads = [threading.Thread(target=call, args=(q, docs)) for q in queries]
    for thread in threads:
        thread.start()
    server.wait_metric("finerank_queue_depth_pairs", len(queries) * len(docs))
    server.proc.send_signal(signal.SIGTERM)
    for thread in [heavy, *threads]:
        thread.join(300)
    assert server.proc.wait(120) == 0
    assert [results[q].status_code for q in ["heavy", *queries]] == [200] * (len(queries) + 1)
    first = results[queries[0]].json()["results"]
    want = qwen3_reranker.rerank(queries[0], docs, top_n=3)
    assert [r["index"] for r in first] == [r.index for r in want]
    assert any("Shutting down" in line for line in server.lines)
