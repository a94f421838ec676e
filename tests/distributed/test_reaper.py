"""Helper processes die with the command that started them, even on ``kill -9`` (issue 11.7):
Ray's dashboard and runtime-env agents outlive a killed driver on their own."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finerank.distributed import reaper

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")

DRIVER = f"""
import subprocess, sys, time, importlib.util
spec = importlib.util.spec_from_file_location("reaper", {reaper.__file__!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.start_reaper()
# a child whose own child ignores SIGTERM (as a hung agent does)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', %r]);"
    " print(p.pid, flush=True); time.sleep(600)" % code])
time.sleep(600)
"""


def _gone(pids, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(reaper._stat(pid) is None for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_descendants_die_with_a_killed_driver():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(driver.stdout.readline())
        time.sleep(3 * reaper.POLL_S)  # the reaper has listed it
        below = set(reaper._descendants(driver.pid))
        assert grandchild in below and len(below) >= 3  # reaper, child, grandchild
    finally:
        driver.kill()
        driver.wait()
    assert _gone(below, reaper.GRACE_S + 10), [p for p in below if reaper._stat(p)]


def _names(pids) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return names


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_ray_processes_die_with_a_killed_batch_rerank(qwen3_reranker_dir, tmp_path, sig):
    """kill -9: the reaper ends what Ray leaves; SIGTERM: an interrupt (exit 130, like
    Ctrl-C) instead of Ray's stack trace and abort (exit 134)."""
    pytest.importorskip("ray")
    rng = random.Random(5)
    words = ["contract", "law", "court", "article", "river", "tax", "labour", "fine"]
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w", encoding="utf-8") as handle:
        for i in range(20_000):
            query = " ".join(rng.choices(words, k=4))
            document = " ".join(rng.choices(words, k=120))
            handle.write(json.dumps({"id": f"p{i}", "query": query, "document": document}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINERANK_", "RAY_"))}
    command = [sys.executable, "-c", "from finerank.cli import main; main()", "batch", "rerank"]
    log = tmp_path / "stderr.txt"
    driver = subprocess.Popen(
        [*command, str(pairs), str(tmp_path / "out"), "-m", str(qwen3_reranker_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 300
        while not any("PairScorer" in name for name in _names(seen)):
            assert driver.poll() is None, "batch rerank ended before its workers started"
            assert time.monotonic() < deadline, _names(seen)
            seen.update(reaper._descendants(driver.pid))
            time.sleep(0.5)
        time.sleep(3 * reaper.POLL_S)
        seen.update(reaper._descendants(driver.pid))
        assert any("raylet" in name for name in _names(seen))
    finally:
        os.kill(driver.pid, sig)
        try:
            code = driver.wait(120)
        except subprocess.TimeoutExpired:
            driver.kill()
            code = driver.wait()
    assert _gone(seen, 60), _names(p for p in seen if reaper._stat(p))
    if sig == signal.SIGTERM:
        assert code == 130, log.read_text(errors="replace")[-2000:]
        assert "SIGTERM received" not in log.read_text(errors="replace")
