"""Fixtures for the HTTP service tests: in-process ASGI clients and an engine with a gate."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator

import httpx
import pytest

from finerank.reranker import Reranker
from finerank.runtime import Runtime
from finerank.settings import Settings


class GatedEngine:
    """The real engine, except that ``run`` waits for ``gate`` while ``gate`` is closed.

    Lets a test hold the batching worker busy, so jobs queue up behind it deterministically.
    Records the size of every run.
    """

    def __init__(self, engine):
        self._engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.run_sizes: list[int] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def run(self, items):
        self.entered.set()
        self.gate.wait(30)
        self.run_sizes.append(len(items))
        return self._engine.run(items)


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Many tiny forward passes from worker threads: one intra-op thread is several times
    faster than two on a shared CPU (no OpenMP spinning), and restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def gated(qwen3_reranker) -> tuple[Reranker, GatedEngine]:
    """A Reranker sharing the tiny model's weights, whose engine can be held."""
    engine = GatedEngine(qwen3_reranker.engine)
    reranker = Reranker(engine, name="tiny", path=qwen3_reranker.path, load_seconds=0.0)
    return reranker, engine


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample name with labels: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def tiny_settings(model_dir, **overrides) -> Settings:
    values = dict(model=str(model_dir), served_model_name="tiny", device="cpu", dtype="float32")
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def asgi_client(
    app, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in-process, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as client:
            yield client


@pytest.fixture
def make_app(qwen3_reranker, qwen3_reranker_dir):
    """``make_app(reranker=None, **settings)`` -> app serving the already loaded tiny model
    (its runtime is at ``app.state.runtime``)."""
    from finerank.server.app import create_app

    def build(reranker: Reranker | None = None, **overrides):
        settings = tiny_settings(qwen3_reranker_dir, **overrides)
        return create_app(runtime=Runtime(settings, reranker=reranker or qwen3_reranker))

    return build


@pytest.fixture
async def client(make_app) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_app()) as c:
        yield c


@pytest.fixture(scope="session")
def small_vocab_reranker(tmp_path_factory):
    """A real BERT cross-encoder whose embedding table holds only the first 2000 ids of its
    tokenizer's vocabulary: documents made of the first ids score, any other word makes the
    forward pass raise IndexError. A real failing input, no mock."""
    from transformers import BertConfig, BertForSequenceClassification

    from finerank import Reranker
    from finerank.testing import write_tokenizer

    target = tmp_path_factory.mktemp("bert-2000-ids")
    config = BertConfig(
        vocab_size=2000,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=1,
        architectures=["BertForSequenceClassification"],
    )
    BertForSequenceClassification(config).save_pretrained(target)
    write_tokenizer("minilm", target)
    return Reranker.from_pretrained(target, device="cpu", dtype="float32")
