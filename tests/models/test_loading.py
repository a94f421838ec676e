"""Loading: local directories, hub ids offline, incomplete directories, family detection."""

from __future__ import annotations

import json
import shutil

import pytest

from finerank import Reranker
from finerank.errors import ModelLoadError, UnsupportedModelError
from finerank.models.loading import detect_family, pick_device, pick_dtype


def test_load_qwen3_from_directory(qwen3_reranker):
    assert qwen3_reranker.family == "qwen3"
    assert qwen3_reranker.max_length == 8192
    assert str(qwen3_reranker.backend.device) == "cpu"
    assert qwen3_reranker.load_seconds > 0
    assert (qwen3_reranker.backend.yes_id, qwen3_reranker.backend.no_id) == (9693, 2152)


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "model"
    with pytest.raises(ModelLoadError, match=str(missing)):
        Reranker.from_pretrained(missing)


def test_directory_without_weights_names_what_is_missing(qwen3_reranker_dir, tmp_path):
    target = tmp_path / "no-weights"
    shutil.copytree(qwen3_reranker_dir, target, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelLoadError, match=r"missing: weights"):
        Reranker.from_pretrained(target)


def test_directory_without_tokenizer_names_what_is_missing(qwen3_reranker_dir, tmp_path):
    target = tmp_path / "no-tokenizer"
    shutil.copytree(
        qwen3_reranker_dir,
        target,
        ignore=shutil.ignore_patterns("tokenizer*", "vocab.json", "merges.txt"),
    )
    with pytest.raises(ModelLoadError, match=r"missing: tokenizer files"):
        Reranker.from_pretrained(target)


def test_hub_id_offline_says_to_pass_a_local_directory(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="pass the local directory"):
        Reranker.from_pretrained("Qwen/Qwen3-Reranker-0.6B")


def test_unsupported_architecture_is_named(qwen3_reranker_dir, tmp_path):
    target = tmp_path / "gpt2ish"
    shutil.copytree(qwen3_reranker_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*qwen3.*seq-cls"):
        Reranker.from_pretrained(target)


def test_family_detection_and_override():
    assert detect_family({"architectures": ["Qwen3ForCausalLM"]}) == "qwen3"
    assert detect_family({"architectures": ["XLMRobertaForSequenceClassification"]}) == "seq-cls"
    assert detect_family({"architectures": ["Qwen3ForSequenceClassification"]}) == "seq-cls"
    assert detect_family({"architectures": ["LlamaForCausalLM"]}, "qwen3") == "qwen3"
    with pytest.raises(UnsupportedModelError, match="supported families"):
        detect_family({}, "t5")


def test_device_and_dtype_defaults():
    assert pick_device("auto").type in ("cpu", "cuda")
    assert str(pick_dtype("auto", pick_device("cpu"))) == "torch.float32"
    assert str(pick_dtype("bf16", pick_device("cpu"))) == "torch.bfloat16"
    with pytest.raises(ModelLoadError, match="float16 is only supported on CUDA"):
        pick_dtype("float16", pick_device("cpu"))
    with pytest.raises(ModelLoadError, match="invalid dtype"):
        pick_dtype("int4")
