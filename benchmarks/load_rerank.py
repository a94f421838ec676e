"""Load generator for ``finerank serve`` (loopback only, bounded in count and time).

It starts ``finerank serve`` on 127.0.0.1 (or targets ``--port`` of a running local server),
then runs three phases and prints the numbers:

1. overhead: the same small request sequentially through HTTP and through a direct in-process
   engine call on the same model; p50 difference = HTTP + batching overhead;
2. load: ``--concurrency`` clients send ``--requests`` requests (stopping at ``--duration``
   seconds), mixing dialects and queries; every answer is checked against the Python API
   (same order, scores within 1e-4): reports req/s, p50/p95/p99, 5xx and wrong answers;
3. memory: the server's RSS after warm-up and at the end.

Example (the 5-minute memory run):
    python benchmarks/load_rerank.py --model /tmp/tiny --duration 300 --requests 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORDS = [
    "river",
    "law",
    "court",
    "contract",
    "tax",
    "capital",
    "city",
    "energy",
    "water",
    "policy",
    "market",
    "bank",
    "school",
    "doctor",
    "train",
    "music",
    "history",
    "science",
    "ocean",
    "mountain",
    "forest",
    "data",
    "model",
    "search",
    "engine",
    "query",
]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _workloads(count: int, docs_per_request: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        docs = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
            for _ in range(docs_per_request)
        ]
        out.append((query, docs))
    return out


def _start_server(args) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable,
        "-c",
        "from finerank.cli import main; main()",
        "serve",
        "--model",
        args.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"server exited early (rc={proc.poll()})")
        if "finerank ready" in line:
            # Keep draining stderr so the server never blocks on a full pipe.
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc
    proc.kill()
    raise SystemExit("server did not become ready in 180 s")


def _body(dialect: str, query: str, docs: list[str], top_n: int) -> tuple[str, dict]:
    if dialect == "tei":
        return "/rerank", {"query": query, "texts": docs}
    if dialect == "v2":
        return "/v2/rerank", {"query": query, "documents": docs, "top_n": top_n}
    return "/v1/rerank", {
        "query": query,
        "documents": docs,
        "top_n": top_n,
        "return_documents": False,
    }


def _ranking(dialect: str, payload) -> list[tuple[int, float]]:
    if dialect == "tei":
        return [(r["index"], r["score"]) for r in payload]
    return [(r["index"], r["relevance_score"]) for r in payload["results"]]


def _correct(got: list[tuple[int, float]], expected, top_n: int | None) -> bool:
    """Each returned document has its Python-API score, and the ranks are the expected ones
    (equal scores may legally swap places)."""
    by_index = {r.index: r.score for r in expected}
    want = [r.score for r in expected[: top_n or len(expected)]]
    if len(got) != len(want):
        return False
    return all(
        index in by_index and abs(score - by_index[index]) <= 1e-4 and abs(score - ws) <= 1e-4
        for (index, score), ws in zip(got, want, strict=True)
    )


async def _overhead(client, reranker, args, pid: int | None) -> dict[str, float]:
    """Interleaved sequential calls: direct engine, in-process service (batching path), HTTP."""
    from finerank.service import RerankService
    from finerank.settings import Settings

    service = RerankService(Settings(model=args.model), reranker=reranker)
    service.start()
    query, docs = _workloads(1, args.docs, seed=99)[0]
    body = {"query": query, "documents": docs, "return_documents": False}
    for _ in range(20):  # warm-up every path
        reranker.rerank(query, docs)
        await service.rerank(query, docs)
        (await client.post("/v1/rerank", json=body)).raise_for_status()
    direct, batched, http = [], [], []
    for _ in range(args.overhead_rounds):
        started = time.perf_counter()
        reranker.rerank(query, docs)
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        await service.rerank(query, docs)
        batched.append(time.perf_counter() - started)
        started = time.perf_counter()
        response = await client.post("/v1/rerank", json=body)
        http.append(time.perf_counter() - started)
        response.raise_for_status()
    service.stop()
    d50, b50, h50 = (statistics.median(x) for x in (direct, batched, http))
    cpu = {}
    if pid is not None:
        # CPU time is not inflated by waiting for a core on a busy machine, unlike wall time:
        # server CPU per HTTP request vs client CPU per direct call.
        started = time.process_time()
        for _ in range(args.overhead_rounds):
            reranker.rerank(query, docs)
        direct_cpu = (time.process_time() - started) / args.overhead_rounds
        before = _cpu_seconds(pid)
        for _ in range(args.overhead_rounds):
            (await client.post("/v1/rerank", json=body)).raise_for_status()
        server_cpu = (_cpu_seconds(pid) - before) / args.overhead_rounds
        cpu = {
            "direct_cpu_ms_per_call": direct_cpu * 1e3,
            "server_cpu_ms_per_request": server_cpu * 1e3,
            "cpu_overhead_ms_per_request": (server_cpu - direct_cpu) * 1e3,
        }
    return {
        "direct_p50_ms": d50 * 1e3,
        "service_p50_ms": b50 * 1e3,
        "http_p50_ms": h50 * 1e3,
        "batching_overhead_p50_ms": (b50 - d50) * 1e3,
        "http_plus_batching_overhead_p50_ms": (h50 - d50) * 1e3,
        # Fastest of each: the least disturbed by other processes on a shared machine.
        "direct_min_ms": min(direct) * 1e3,
        "http_min_ms": min(http) * 1e3,
        "http_plus_batching_overhead_min_ms": (min(http) - min(direct)) * 1e3,
        **cpu,
    }


async def _load(client, reranker, args) -> dict[str, float]:
    workloads = _workloads(args.distinct, args.docs, seed=1)
    expected = [reranker.rerank(q, d) for q, d in workloads]
    latencies: list[float] = []
    counts = {"ok": 0, "5xx": 0, "other": 0, "wrong": 0}
    next_request = 0
    deadline = time.monotonic() + args.duration
    rng = random.Random(2)

    async def worker() -> None:
        nonlocal next_request
        while next_request < args.requests and time.monotonic() < deadline:
            number = next_request
            next_request += 1
            which = number % len(workloads)
            dialect = ("v1", "v2", "tei")[number % 3]
            top_n = rng.choice((None, 1, 3))
            path, body = _body(dialect, *workloads[which], top_n or 0)
            started = time.perf_counter()
            response = await client.post(path, json=body)
            latencies.append(time.perf_counter() - started)
            if response.status_code >= 500:
                counts["5xx"] += 1
            elif response.status_code != 200:
                counts["other"] += 1
            elif _correct(
                _ranking(dialect, response.json()),
                expected[which],
                None if dialect == "tei" else top_n,
            ):
                counts["ok"] += 1
            else:
                counts["wrong"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p95_ms": _percentile(latencies, 0.95) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        **counts,
    }


async def main_async(args) -> None:
    import httpx
    import torch

    from finerank import Reranker

    torch.set_num_threads(args.threads)
    proc = None if args.external else _start_server(args)
    reranker = Reranker.from_pretrained(args.model, device="cpu", dtype="float32")
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{args.port}", limits=limits, timeout=120
        ) as client:
            pid = proc.pid if proc else None
            print(f"== overhead (sequential, {args.docs} docs/request)")
            for key, value in (await _overhead(client, reranker, args, pid)).items():
                print(f"  {key}: {value:.3f}")
            rss_start = _rss_mib(pid) if pid else float("nan")
            print(
                f"== load ({args.concurrency} clients, <= {args.requests} requests, "
                f"<= {args.duration:g} s, dialects v1/v2/tei)"
            )
            result = await _load(client, reranker, args)
            for key, value in result.items():
                print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
            if pid:
                print(f"== server RSS: start {rss_start:.1f} MiB, end {_rss_mib(pid):.1f} MiB")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model dir (e.g. finerank make-test-model)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--external", action="store_true", help="use a server already on --port")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=60.0, help="stop the load after S s")
    parser.add_argument("--docs", type=int, default=8, help="documents per request")
    parser.add_argument("--distinct", type=int, default=50, help="distinct (query, docs) sets")
    parser.add_argument("--overhead-rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    args = parser.parse_args()
    args.duration = min(args.duration, 900.0)  # bounded, whatever is asked
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
