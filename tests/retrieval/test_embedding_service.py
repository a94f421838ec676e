"""Embeddings through the batching path: cross-request batches, exact vectors, cut before
tokenizing, a big request never stalling a small one, limits."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from finerank.errors import InvalidInputError, LimitExceededError
from finerank.retrieval.embedding_service import EmbeddingService
from finerank.settings import Settings

TEXTS = [
    "The capital of China is Beijing.",
    "网络运营者应当按照网络安全等级保护制度的要求，履行安全保护义务。",
    "Gravity is a force that attracts two bodies towards each other. " * 5,
    "x",
]


class GatedEmbedder:
    """The real embedder, counting its forward calls and the characters its tokenizer reads;
    ``run`` waits while ``gate`` is closed (to hold the batching worker, so that requests
    queue up behind it deterministically)."""

    def __init__(self, embedder):
        self._embedder = embedder
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.runs: list[int] = []
        self.tokenized_chars: list[int] = []

    def __getattr__(self, name):
        return getattr(self._embedder, name)

    def prepare(self, texts, **kwargs):
        tokenizer = self._embedder.tokenizer
        real = type(tokenizer)
        seen = self.tokenized_chars

        class Counting(real):  # special methods are looked up on the type
            def __call__(self, text, *args, **kw):
                batch = [text] if isinstance(text, str) else list(text)
                seen.append(sum(len(t) for t in batch))
                return real.__call__(self, text, *args, **kw)

        tokenizer.__class__ = Counting
        try:
            return self._embedder.prepare(texts, **kwargs)
        finally:
            tokenizer.__class__ = real

    def run(self, items):
        self.entered.set()
        self.gate.wait(30)
        self.runs.append(len(items))
        return self._embedder.run(items)


@pytest.fixture
def gated(qwen3_embedder):
    return GatedEmbedder(qwen3_embedder)


@pytest.fixture
def service(gated):
    service = EmbeddingService(Settings(max_documents_per_request=8, max_tokens_per_request=500))
    service.start(gated)
    yield service
    gated.gate.set()
    service.stop()


async def test_requests_share_forward_passes_and_get_the_direct_vectors(service, gated):
    gated.gate.clear()
    warm = asyncio.ensure_future(service.embed(["warm up"]))
    while not gated.entered.is_set():
        await asyncio.sleep(0.001)
    requests = [
        service.embed(TEXTS[:2]),
        service.embed(TEXTS[2:], dimensions=16),
        service.embed(["capital?"], input_type="query", instruction="Find capitals"),
        service.embed(["数据安全"], input_type="query"),
    ]
    tasks = [asyncio.ensure_future(request) for request in requests]
    while service.scheduler.queued_jobs < len(tasks):
        await asyncio.sleep(0.001)
    gated.gate.set()
    await warm
    outcomes = await asyncio.gather(*tasks)
    assert gated.runs == [1, 6]  # the warm-up, then all four requests in one forward call
    direct = gated._embedder
    expected = [
        direct.embed_documents(TEXTS[:2]),
        direct.embed_documents(TEXTS[2:], dimensions=16),
        direct.embed_queries(["capital?"], instruction="Find capitals"),
        direct.embed_queries(["数据安全"]),
    ]
    for outcome, want in zip(outcomes, expected, strict=True):
        assert outcome.vectors.shape == want.shape
        # equal up to float32 rounding (other batch neighbours, other matrix shapes)
        np.testing.assert_allclose(outcome.vectors, want, rtol=0, atol=2e-7)
    assert outcomes[0].prompt_tokens == sum(direct.count_tokens(t) for t in TEXTS[:2])


async def test_a_huge_input_is_cut_before_it_is_tokenized(qwen3_embedder, gated):
    """10 MB of text cost what its first max_length tokens cost: the tokenizer never sees
    more than a small multiple of that, and the vector is the full text's."""
    service = EmbeddingService(Settings(max_tokens_per_request=10_000))
    service.start(gated)
    try:
        sentence = "网络安全法第六十三条规定了罚款。Network security law, article 63. "
        huge = sentence * (10_000_000 // len(sentence))
        outcome = await service.embed([huge])
        assert outcome.prompt_tokens == qwen3_embedder.max_length  # cut + end token
        assert max(gated.tokenized_chars) < 200_000  # of 10,000,000 characters
        # the same vector as embedding a 200 KB prefix (already longer than what is read),
        # tokenized whole and truncated like the model card's code
        prefix = huge[:200_000]
        ids = qwen3_embedder.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        from finerank.retrieval.embedder import EmbeddingInput

        item = EmbeddingInput(
            tuple(ids[: qwen3_embedder.max_length - 1]) + (qwen3_embedder.eos_id,)
        )
        want = qwen3_embedder.finish(list(qwen3_embedder.run([item])))
        np.testing.assert_allclose(outcome.vectors, want, rtol=0, atol=1e-6)
    finally:
        service.stop()


async def test_a_small_request_is_answered_before_a_big_one(qwen3_embedding_dir):
    """A big request is tokenized in slices and embedded in cuts of the token budget, so a
    small request sent while it is in progress is answered first (the order of answers, not
    a timing)."""
    from finerank.retrieval.embedder import Qwen3Embedder

    # a short max_length keeps the test cheap: each text is still cut and tokenized
    embedder = Qwen3Embedder(qwen3_embedding_dir, device="cpu", dtype="float32", max_length=128)
    service = EmbeddingService(
        Settings(max_documents_per_request=2000, max_tokens_per_request=10_000_000)
    )
    service.start(embedder)
    try:
        big = [f"document {i}: " + "网络安全 network security law " * 60 for i in range(600)]
        order: list[str] = []

        async def call(name: str, texts: list[str]) -> None:
            await service.embed(texts)
            order.append(name)

        big_task = asyncio.ensure_future(call("big", big))
        await asyncio.sleep(0.05)  # the big request is being tokenized
        await call("small", ["a short query"])
        await big_task
        assert order == ["small", "big"]
    finally:
        service.stop()


async def test_limits_and_bad_inputs(service):
    with pytest.raises(LimitExceededError, match="max_documents_per_request=8") as info:
        await service.embed(["x"] * 9)
    assert (info.value.limit_name, info.value.value) == ("max_documents_per_request", 9)
    with pytest.raises(LimitExceededError, match="max_tokens_per_request=500"):
        await service.embed(["word " * 400, "word " * 400])
    with pytest.raises(InvalidInputError, match=r"input\[1\] is empty"):
        await service.embed(["ok", ""])
    with pytest.raises(InvalidInputError, match="larger than"):
        await service.embed(["ok"], dimensions=65)
    with pytest.raises(InvalidInputError, match="input_type"):
        await service.embed(["ok"], input_type="passage")


def test_a_request_prepared_in_slices_equals_one_prepared_whole(qwen3_embedder):
    """The step path of a big request (slices of PREPARE_SLICE_CHARS on the prepare lane)
    gives the inputs of one ``prepare`` call, in order, and yields running token counts."""
    from finerank.retrieval.embedding_service import PREPARE_SLICE_CHARS, _prepare_in_slices

    texts = [f"{i}: " + "网络安全 network security law " * 200 for i in range(30)]
    assert sum(map(len, texts)) > 2 * PREPARE_SLICE_CHARS
    steps = _prepare_in_slices(qwen3_embedder, texts, "query", "Find the law")
    counts: list[int] = []
    try:
        while True:
            counts.append(next(steps))
    except StopIteration as done:
        items = done.value
    whole = qwen3_embedder.prepare(texts, input_type="query", instruction="Find the law")
    assert items == whole
    assert len(counts) >= 3 and counts == sorted(counts)
    assert counts[-1] == sum(item.cost for item in whole)


async def test_embed_requests_are_timed_on_both_paths(service):
    """``embed`` returns its timings and the listeners get them; the blocking embedder
    interface (ingest, sync search) is timed too."""
    seen = []
    service.add_request_listener(seen.append)
    outcome = await service.embed(TEXTS[:2])
    vectors = await asyncio.to_thread(service.embed_documents, TEXTS[2:])
    assert vectors.shape[0] == 2
    assert seen[0] == outcome.timings and len(seen) == 2
    for timings in seen:
        phases = (timings.tokenize_s, timings.queue_s, timings.forward_s)
        assert min(phases) >= 0 and sum(phases) <= timings.total_s
        assert timings.batches == 1 and timings.tokenize_s > 0 and timings.forward_s > 0
