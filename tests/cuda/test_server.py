"""``finerank serve --device cuda`` as a real process: it says it runs on the GPU, and its
scores equal the same model run in-process."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.cuda.conftest import MARKS
from tests.server.test_cli_serve import Server

pytestmark = MARKS


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_serve_on_cuda(qwen3_reranker_dir, cuda_rerankers, dtype):
    server = Server(qwen3_reranker_dir, "--device", "cuda", "--dtype", dtype)
    try:
        server.wait_line(f"dtype {dtype} on cuda")  # logged just after the ready line
        docs = ["第六十三条 处五日以下拘留。", "Bananas are yellow.", "网络运营者应当履行义务。"]
        body = {"query": "罚款多少？", "documents": docs}
        # twice, on both sides: a first use runs the varlen kernel's check, which answers with
        # the SDPA path's result (bf16 roundings apart from the kernel's); then both run varlen
        for _ in range(2):
            reply = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
        served = {r["index"]: r["relevance_score"] for r in reply.json()["results"]}
        local = [cuda_rerankers[dtype].rerank("罚款多少？", docs) for _ in range(2)][-1]
        for result in local:
            assert abs(served[result.index] - result.score) <= 1e-3
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
    assert code == 0, "\n".join(server.lines[-20:])
