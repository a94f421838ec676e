"""Find a model on disk (or on a hub), check it is complete, and detect its family."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from finerank.errors import FinerankError, ModelLoadError, UnsupportedModelError

Family = Literal["qwen3", "seq-cls"]
FAMILIES: tuple[str, ...] = ("qwen3", "seq-cls")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)


@dataclass(frozen=True)
class ResolvedModel:
    """A model directory known to hold a config, weights and a tokenizer."""

    path: Path
    config: dict[str, Any]
    family: Family


# (hub id, CLI flag) to name in hints, by the kind of model asked for
_EXAMPLES = {
    "model": ("Qwen/Qwen3-Reranker-0.6B", "--model"),
    "reranker": ("Qwen/Qwen3-Reranker-0.6B", "--model"),
    "embedding model": ("Qwen/Qwen3-Embedding-0.6B", "--embedding-model"),
}


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not name.startswith((".", "/", "~"))
        and not os.path.exists(name)
    )


def resolve_model_dir(name_or_path: str | os.PathLike[str], *, what: str = "model") -> Path:
    """Return a local directory for ``name_or_path``, downloading a hub id if a network exists.

    Raises:
        ModelLoadError: the directory does not exist, or the hub id cannot be fetched (the
            message says to pass a local directory).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    hub_example, flag = _EXAMPLES.get(what, _EXAMPLES["model"])
    if not _looks_like_hub_id(text):
        raise ModelLoadError(
            f"{what} directory not found: {path} (pass a local directory holding config.json, "
            f"weights and tokenizer files, or a hub id such as {hub_example})"
        )
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id=text,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt"],
        )
    except Exception as exc:  # network errors come in many classes
        raise ModelLoadError(
            f"could not download {what} {text!r} from the hub ({type(exc).__name__}: {exc}). "
            "Without network access, download it elsewhere and pass the local directory "
            f"({flag} DIR), or build a random-weight test model with "
            f"`finerank make-test-model DIR{' --kind qwen3-embedding' if 'embed' in what else ''}`."
        ) from exc
    return Path(local)


def check_model_dir(path: Path, *, what: str = "model") -> dict[str, Any]:
    """Check that ``path`` holds config.json, weights and tokenizer files; return the config."""
    config_file = path / "config.json"
    missing: list[str] = []
    if not config_file.is_file():
        missing.append("config.json")
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model.bin)")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, or vocab/merges)")
    if missing:
        raise ModelLoadError(f"{what} directory {path} is missing: {', '.join(missing)}")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {config_file}: {exc}") from exc


def detect_family(config: dict[str, Any], override: str | None = None) -> Family:
    """Pick the scoring family from ``config.json`` (``architectures``, ``model_type``).

    Example:
        >>> detect_family({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"})
        'qwen3'
        >>> detect_family({"architectures": ["BertForSequenceClassification"]})
        'seq-cls'
    """
    if override is not None:
        if override not in FAMILIES:
            raise UnsupportedModelError(
                f"unknown family {override!r}; supported families: {', '.join(FAMILIES)}"
            )
        return override  # type: ignore[return-value]
    architectures = config.get("architectures") or []
    arch = architectures[0] if architectures else ""
    if arch.endswith("ForSequenceClassification"):
        return "seq-cls"
    if arch in ("Qwen3ForCausalLM",) or (not arch and config.get("model_type") == "qwen3"):
        return "qwen3"
    raise UnsupportedModelError(
        f"unsupported architecture {arch or config.get('model_type') or 'unknown'!r}: finerank "
        "scores with family 'qwen3' (Qwen3ForCausalLM yes/no rerankers such as "
        "Qwen3-Reranker-0.6B/4B/8B) or 'seq-cls' (*ForSequenceClassification cross-encoders); "
        "pass family= to override"
    )


def resolve_model(
    name_or_path: str | os.PathLike[str], family: str | None = None, *, what: str = "model"
) -> ResolvedModel:
    """Resolve, check and classify a model in one call."""
    path = resolve_model_dir(name_or_path, what=what)
    config = check_model_dir(path, what=what)
    return ResolvedModel(path=path, config=config, family=detect_family(config, family))


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` means CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    return resolved


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def pick_dtype(
    dtype: str | torch.dtype = "auto", device: torch.device | None = None
) -> torch.dtype:
    """``auto`` means bf16 on CUDA, fp32 on CPU. fp16 is refused on CPU."""
    device = device or torch.device("cpu")
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype == "auto":
        resolved = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif dtype in _DTYPES:
        resolved = _DTYPES[dtype]
    else:
        raise ModelLoadError(f"invalid dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    if resolved == torch.float16 and device.type == "cpu":
        raise ModelLoadError("float16 is only supported on CUDA; use bfloat16 or float32 on CPU")
    return resolved


def quiet_transformers() -> None:
    """Silence transformers' progress bars and info logs (finerank reports load time itself)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def reading_model_files(path: str | os.PathLike[str], *, what: str = "model") -> Iterator[None]:
    """Turn any failure to read a model's files (corrupt or truncated weights, a broken
    tokenizer, shapes that do not fit the config) into one :class:`ModelLoadError` line.

    Example:
        >>> with reading_model_files("/m", what="reranker"):  # doctest: +ELLIPSIS
        ...     raise RuntimeError("Error while deserializing header: incomplete metadata\\n...")
        Traceback (most recent call last):
        ...
        finerank.errors.ModelLoadError: cannot load reranker from /m: Error while deserializing ...
    """
    try:
        yield
    except (FinerankError, ImportError, MemoryError):
        raise  # already clear, or a broken install / the machine: not the files
    except Exception as exc:  # noqa: BLE001 - loaders raise many classes (safetensors, pickle, tokenizers)
        lines = str(exc).strip().splitlines()
        reason = lines[0][:300] if lines else type(exc).__name__
        raise ModelLoadError(
            f"cannot load {what} from {path}: {reason} (the files may be corrupt or "
            "incomplete: copy or download them again)"
        ) from exc
