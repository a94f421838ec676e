"""``finerank serve --ray``: Ray Serve replicas answer every dialect like the in-process app."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from typer.testing import CliRunner

from finerank.errors import InvalidInputError
from finerank.settings import Settings

DOCS = [
    "Article 1: a contract is an agreement between parties.",
    "The river flows under the sky.",
    "A court of appeal hears criminal and civil appeals.",
    {"text": "Labour law protects workers; the judge may impose a fine."},
]
TEXTS = [d if isinstance(d, str) else d["text"] for d in DOCS]
# (method, path, body): every rerank dialect, the score route, and the ops routes.
CALLS = [
    (
        "POST",
        "/v2/rerank",
        {
            "model": "tiny",
            "query": "contract law",
            "documents": TEXTS,
            "top_n": 3,
            "return_documents": True,
        },
    ),
    (
        "POST",
        "/v1/rerank",
        {
            "query": "criminal appeal",
            "documents": DOCS,
            "instruction": "Find the court that hears the case",
        },
    ),
    ("POST", "/rerank", {"query": "workers", "documents": DOCS, "top_k": 2}),
    (
        "POST",
        "/rerank",
        {"query": "workers", "texts": TEXTS, "raw_scores": True, "return_text": True},
    ),
    ("POST", "/v1/score", {"model": "tiny", "text_1": "contract", "text_2": TEXTS}),
    (
        "POST",
        "/v1/rerank",
        {
            "query": "long",
            "documents": [" ".join(TEXTS) * 4],
            "long_document": "chunk",
            "max_tokens_per_doc": 40,
        },
    ),
    ("GET", "/health", None),
    ("POST", "/v1/rerank", {"query": "no documents"}),  # 422 naming the field
    ("POST", "/v1/rerank", {"model": "other", "query": "q", "documents": ["d"]}),  # 404
]
VOLATILE = {"id", "created"}  # request ids and timestamps differ between two servers


def strip_volatile(value):
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


async def call_all(client: httpx.AsyncClient) -> list[tuple[int, object]]:
    answers = []
    for method, path, body in CALLS:
        response = await client.request(method, path, json=body)
        answers.append((response.status_code, strip_volatile(response.json())))
    return answers


async def in_process_answers(settings: Settings, reranker) -> list[tuple[int, object]]:
    from finerank.runtime import Runtime
    from finerank.server.app import create_app

    app = create_app(runtime=Runtime(settings, reranker=reranker))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await call_all(client)


def assert_same(got, expected) -> None:
    """Equal JSON, floats to 1e-6 (the replica runs the same engine in another process)."""
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-6)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_same(g, e)
    else:
        assert got == expected


@pytest.mark.ray
def test_ray_serve_answers_like_the_in_process_server(
    ray_cluster, qwen3_reranker_dir, qwen3_reranker
):
    from ray import serve

    from finerank.distributed.serve import Scaling, build_application, free_port, start

    settings = Settings(
        model=str(qwen3_reranker_dir),
        served_model_name="tiny",
        device="cpu",
        dtype="float32",
        port=free_port(),
    )
    # Autoscaling from 2 (to 3) replicas: two replicas serve, through the autoscaling config.
    # (Fixed --replicas N is the same deployment with num_replicas; see test_scaling_flags.)
    application = build_application(
        settings, scaling=Scaling.parse(None, "2:3"), cpus_per_replica=0.5
    )
    try:
        url = start(application, settings)
        replicas = serve.status().applications["finerank"].deployments["finerank"]
        assert replicas.replica_states.get("RUNNING") == 2

        async def over_http():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                answers = await call_all(client)
                # concurrent requests spread over both replicas, same answers
                body = CALLS[1][2]
                many = await asyncio.gather(
                    *(client.post("/v1/rerank", json=body) for _ in range(12))
                )
                return answers, [strip_volatile(r.json()) for r in many]

        served, concurrent = asyncio.run(over_http())
    finally:
        serve.shutdown()
    expected = asyncio.run(in_process_answers(settings, qwen3_reranker))
    assert [status for status, _ in expected] == [200] * 7 + [422, 404]
    for got, want in zip(served, expected, strict=True):
        assert_same(got, want)
    for answer in concurrent:
        assert_same(answer, expected[1][1])


def test_scaling_flags():
    from finerank.distributed.serve import Scaling

    assert Scaling.parse(3, None).deployment_options() == {"num_replicas": 3}
    options = Scaling.parse(None, "0:4").deployment_options()["autoscaling_config"]
    assert (options["min_replicas"], options["max_replicas"]) == (0, 4)
    for bad in ("4", "a:b", "3:1", "0:0"):
        with pytest.raises(InvalidInputError, match="autoscale"):
            Scaling.parse(None, bad)
    with pytest.raises(InvalidInputError, match="not both"):
        Scaling.parse(2, "1:2")


def test_serve_cli_rejects_ray_flags_without_ray(qwen3_reranker_dir):
    from finerank.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--model", str(qwen3_reranker_dir), "--replicas", "2"]
    )
    assert result.exit_code == 2 and "need --ray" in result.output
    result = CliRunner().invoke(
        app, ["serve", "--ray", "--model", str(qwen3_reranker_dir), "--autoscale", "4:1"]
    )
    assert result.exit_code == 2 and "MIN <= MAX" in result.output
