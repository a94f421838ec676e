"""A 10 MB /v1/embeddings input next to small requests: before and after the cut.

Serves the tiny test embedding model (``finerank make-test-model DIR --kind qwen3-embedding``,
or the model at ``--model``) through the real app in-process and sends, at the same time, one
request holding a single ~10 MB text and ``--small`` small requests. Prints how long the big
input's tokenization takes in full (what finerank did before it cut texts before tokenizing)
and after the cut, then the order in which the answers came back and each one's latency.

    python benchmarks/load_embeddings.py [--model DIR] [--megabytes 10] [--small 8]

Record ``uptime`` next to the numbers: they are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path


async def run(model: Path, megabytes: float, small: int) -> None:
    import httpx

    from finerank.runtime import Runtime
    from finerank.server.app import create_app
    from finerank.settings import Settings

    sentence = "网络安全法第六十三条规定了罚款。Network security law, article 63. "
    huge = sentence * int(megabytes * 1_000_000 / len(sentence.encode("utf-8")))
    settings = Settings(
        embedding_model=str(model),
        device="cpu",
        dtype="float32",
        data_dir=Path(tempfile.mkdtemp()) / "qdrant",
        max_body_bytes=int(megabytes * 1_000_000 * 1.2) + 1_000_000,
        max_tokens_per_request=10_000_000,
    )
    runtime = Runtime(settings)
    runtime.start()
    embedder = runtime.embedder()
    started = time.perf_counter()
    embedder.tokenizer(huge, add_special_tokens=False)
    full = time.perf_counter() - started
    started = time.perf_counter()
    embedder.prepare([huge])
    cut = time.perf_counter() - started
    print(f"input: {len(huge.encode('utf-8')) / 1e6:.1f} MB, {len(huge):,} characters")
    print(f"tokenizing all of it (before): {full:.2f} s; prepare with the cut (now): {cut:.3f} s")

    app = create_app(runtime=runtime)
    order: list[tuple[str, float]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", timeout=600
        ) as client:
            t0 = time.perf_counter()

            async def call(name: str, body: dict) -> None:
                response = await client.post("/v1/embeddings", json=body)
                assert response.status_code == 200, response.text[:300]
                order.append((name, time.perf_counter() - t0))

            big = asyncio.ensure_future(call("10 MB", {"input": [huge]}))
            await asyncio.sleep(0)  # the big request is sent first
            await asyncio.gather(
                big, *(call(f"small {i}", {"input": [f"query {i}"]}) for i in range(small))
            )
    runtime.stop()
    print("answers in order of arrival (seconds after the first request was sent):")
    for name, seconds in order:
        print(f"  {name:>8}  {seconds:.3f}")
    print(f"load average: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="embedding model directory")
    parser.add_argument("--megabytes", type=float, default=10.0)
    parser.add_argument("--small", type=int, default=8)
    args = parser.parse_args()
    model = args.model
    if model is None:
        from finerank.testing import build_qwen3_embedding

        model = build_qwen3_embedding(Path(tempfile.mkdtemp()) / "tiny-qwen3-emb")
    asyncio.run(run(model, args.megabytes, args.small))


if __name__ == "__main__":
    main()
