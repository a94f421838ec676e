"""Embedders: Qwen3 parity with the official model-card code, MiniLM, remote, dimensions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finerank.errors import InvalidInputError, ModelLoadError
from finerank.retrieval.embedder import Embedder, Qwen3Embedder, SentenceTransformerEmbedder

TEXTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. " * 6,
    "网络运营者应当按照网络安全等级保护制度的要求，履行安全保护义务。",
    "x",
]
QUERIES = ["What is the capital of China?", "Explain gravity", "网络安全等级保护"]
TASK = "Given a web search query, retrieve relevant passages that answer the query"


def official_qwen3_embeddings(path, texts: list[str], max_length: int = 8192) -> np.ndarray:
    """The Qwen3-Embedding model-card snippet, kept independent of finerank.

    The real Qwen3-Embedding tokenizer appends <|endoftext|> in its post-processor; the test
    tokenizer (the plain Qwen3 one) does not, so the same post-processor is installed here.
    """
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="$A <|endoftext|>",
        pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", 151643)],
    )
    model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()

    def last_token_pool(last_hidden_states, attention_mask):
        left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
        if left_padding:
            return last_hidden_states[:, -1]
        sequence_lengths = attention_mask.sum(dim=1) - 1
        batch_size = last_hidden_states.shape[0]
        return last_hidden_states[torch.arange(batch_size), sequence_lengths]

    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        outputs = model(**batch)
    embeddings = last_token_pool(outputs.last_hidden_state, batch["attention_mask"])
    return F.normalize(embeddings, p=2, dim=1).numpy()


@pytest.fixture(scope="module")
def qwen3_embedder(qwen3_embedding_dir) -> Qwen3Embedder:
    embedder = Embedder.from_pretrained(
        qwen3_embedding_dir, device="cpu", dtype="float32", max_batch_tokens=64
    )
    assert isinstance(embedder, Qwen3Embedder)
    return embedder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_qwen3_documents_match_official_snippet(qwen3_embedder, qwen3_embedding_dir):
    ours = qwen3_embedder.embed_documents(TEXTS)
    reference = official_qwen3_embeddings(qwen3_embedding_dir, TEXTS)
    assert ours.shape == reference.shape == (len(TEXTS), 64)
    assert _cosines(ours, reference).min() >= 1 - 1e-6
    # the texts really differ (a constant output would pass the cosine check too)
    assert float(ours[0] @ ours[2]) < 0.999


def test_qwen3_queries_use_instruct_prompt_and_share_prefix(qwen3_embedder, qwen3_embedding_dir):
    task = "Retrieve legal articles"
    ours = qwen3_embedder.embed_queries(QUERIES, instruction=task)
    prompts = [f"Instruct: {task}\nQuery:{q}" for q in QUERIES]
    reference = official_qwen3_embeddings(qwen3_embedding_dir, prompts)
    assert _cosines(ours, reference).min() >= 1 - 1e-6
    default = qwen3_embedder.embed_queries(QUERIES[:1])
    reference_default = official_qwen3_embeddings(
        qwen3_embedding_dir, [f"Instruct: {TASK}\nQuery:{QUERIES[0]}"]
    )
    assert _cosines(default, reference_default).min() >= 1 - 1e-6


def test_qwen3_truncation_matches_official(qwen3_embedding_dir):
    embedder = Qwen3Embedder(qwen3_embedding_dir, device="cpu", dtype="float32", max_length=12)
    ours = embedder.embed_documents(TEXTS)
    reference = official_qwen3_embeddings(qwen3_embedding_dir, TEXTS, max_length=12)
    assert _cosines(ours, reference).min() >= 1 - 1e-6


def test_matryoshka_dimensions_cut_then_normalise(qwen3_embedder):
    full = qwen3_embedder.embed_documents(TEXTS)
    cut = qwen3_embedder.embed_documents(TEXTS, dimensions=16)
    assert cut.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, rtol=1e-5)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="larger than"):
        qwen3_embedder.embed_documents(TEXTS, dimensions=65)


def test_qwen3_dir_with_sentence_transformers_config_stays_qwen3(qwen3_embedding_dir, tmp_path):
    import shutil

    copy = shutil.copytree(qwen3_embedding_dir, tmp_path / "qwen3-st")
    (copy / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]'
    )
    assert isinstance(Embedder.from_pretrained(copy, device="cpu"), Qwen3Embedder)


def test_bad_inputs_are_clear_errors(qwen3_embedder):
    with pytest.raises(InvalidInputError, match=r"texts\[1\]"):
        qwen3_embedder.embed_documents(["ok", 3])
    with pytest.raises(InvalidInputError, match="list of strings"):
        qwen3_embedder.embed_documents("one string")
    assert qwen3_embedder.embed_documents([]).shape == (0, 64)
    with pytest.raises(ModelLoadError, match="not found"):
        Embedder.from_pretrained("/no/such/embedding-model")


def test_minilm_is_normalised_and_semantic(minilm):
    assert isinstance(minilm, SentenceTransformerEmbedder)
    vectors = minilm.embed_documents(
        ["A cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell today."]
    )
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_minilm_cut_before_tokenizing_equals_sentence_transformers_on_the_full_text(minilm):
    """The text is cut to a prefix before it is tokenized; the vector is still what
    sentence-transformers gives for the whole text (which it truncates to 256 tokens)."""
    long_texts = [
        "Shock waves form ahead of a blunt body in supersonic flow; " * 300,
        "网络运营者应当履行安全保护义务，" * 400,
        "short",
    ]
    items = minilm.prepare(long_texts)
    assert all(len(item.text) < 3000 for item in items[:2])  # cut, of 18,000 / 6,400 chars
    want = minilm.model.encode(long_texts, convert_to_numpy=True, show_progress_bar=False)
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(minilm.embed_documents(long_texts), want, rtol=0, atol=1e-6)


def test_qwen3_cut_before_tokenizing_equals_tokenizing_everything(qwen3_embedding_dir):
    embedder = Qwen3Embedder(qwen3_embedding_dir, device="cpu", dtype="float32", max_length=50)
    long_text = "网络安全法第六十三条 fines of 50,000 yuan;   spaces\n\nand lines " * 200
    [item] = embedder.prepare([long_text])
    full = embedder.tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert item.ids == tuple(full[:49]) + (embedder.eos_id,)
    reference = official_qwen3_embeddings(qwen3_embedding_dir, [long_text], max_length=50)
    assert _cosines(embedder.embed_documents([long_text]), reference).min() >= 1 - 1e-6
