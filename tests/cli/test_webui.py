"""``finerank ui`` and ``finerank serve --ui`` as real processes: ready lines with the page
URL, the key on the page, exit 0 on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import httpx

from tests.server.test_cli_serve import Server

UI_READY = re.compile(r"finerank ui ready: (http://127\.0\.0\.1:\d+)/ui/")


def test_ui_needs_its_key_and_exits_0_on_sigterm(qwen3_reranker_dir):
    cmd = [
        sys.executable,
        "-c",
        "from finerank.cli import main; main()",
        "ui",
        "--model",
        str(qwen3_reranker_dir),
        "--port",
        "0",
        "--api-key",
        "ui-key-123",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINERANK_")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()
    found: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            match = UI_READY.search(line)
            if match:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(240) and found, "\n".join(lines[-20:])
        base = found[0]
        assert "(needs the API key)" in lines[-1]
        assert httpx.get(f"{base}/ui/config", timeout=30).status_code == 401
        keyed = httpx.get(
            f"{base}/ui/config", headers={"Authorization": "Bearer ui-key-123"}, timeout=30
        )
        assert keyed.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, "\n".join(lines[-20:])


def test_serve_ui_ready_line_names_the_page(qwen3_reranker_dir):
    server = Server(qwen3_reranker_dir, "--ui")
    try:
        ready = next(line for line in server.lines if "finerank ready" in line)
        assert f"page: {server.url}/ui/" in ready
        assert httpx.get(f"{server.url}/ui/", timeout=30).status_code == 200
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
    assert code == 0
