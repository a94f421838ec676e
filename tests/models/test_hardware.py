"""Native bf16 detection and the ready line's dtype advice."""

from __future__ import annotations

import torch

from finerank.models import hardware


def test_flags_classify_bf16_units():
    assert hardware.cpu_bf16_support(flags={"avx2", "amx_bf16", "avx512_bf16"}).units == "AMX"
    assert hardware.cpu_bf16_support(flags={"avx512_bf16"}).units == "AVX512_BF16"
    assert not hardware.cpu_bf16_support(flags={"avx2", "avx512f"}).native


def test_report_tells_how_to_use_the_faster_dtype(monkeypatch):
    native = hardware.cpu_bf16_support(flags={"avx512_bf16"})
    emulated = hardware.cpu_bf16_support(flags={"avx2"})
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda flags=None: native)
    line = hardware.dtype_report(torch.device("cpu"), torch.float32)
    assert "fastest here: bfloat16" in line and "--dtype bfloat16" in line
    line = hardware.dtype_report(torch.device("cpu"), torch.bfloat16)
    assert "--dtype" not in line and "float32 gives scores equal" in line

    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda flags=None: emulated)
    line = hardware.dtype_report(torch.device("cpu"), torch.float32)
    assert "fastest here: float32" in line and "--dtype" not in line
