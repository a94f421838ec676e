"""The fused elementwise chains (finerank.models.fused): their formulas equal the Qwen3
modules, a failing or wrong compiler falls back to eager, and the compiled decoder (forced on
the tiny model) scores like the eager one."""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from finerank.errors import InvalidInputError
from finerank.models import fused
from finerank.models.fused import FusedKernels, compile_wanted, qk_norm_rope, rms_norm
from finerank.models.qwen3 import PackedDecoder, _rope

HEADS, KV_HEADS, DIM = 4, 2, 16


def _norm(dtype: torch.dtype, seed: int) -> Qwen3RMSNorm:
    norm = Qwen3RMSNorm(DIM, eps=1e-6)
    generator = torch.Generator().manual_seed(seed)
    norm.weight.data = 1 + 0.1 * torch.randn(DIM, generator=generator)
    return norm.to(dtype)


def _rotary(tokens: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.arange(tokens)[:, None] * 0.37 ** torch.arange(DIM // 2)[None]
    angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # [tokens, 1, DIM]
    return angles.cos().to(dtype), angles.sin().to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.inference_mode()
def test_rms_norm_is_the_module(dtype):
    norm = _norm(dtype, 0)
    x = torch.randn(7, 3, DIM).to(dtype)
    assert torch.equal(rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.inference_mode()
def test_qk_norm_rope_is_the_module_path(dtype):
    q_norm, k_norm = _norm(dtype, 1), _norm(dtype, 2)
    tokens = 9
    qkv = torch.randn(tokens, HEADS + 2 * KV_HEADS, DIM).to(dtype)
    cos, sin = _rotary(tokens, dtype)
    got = qk_norm_rope(qkv, q_norm.weight, k_norm.weight, cos, sin, 1e-6, HEADS, KV_HEADS)
    want = qkv.clone()
    want[:, :HEADS] = _rope(q_norm(qkv[:, :HEADS]), cos, sin)
    want[:, HEADS : HEADS + KV_HEADS] = _rope(k_norm(qkv[:, HEADS : HEADS + KV_HEADS]), cos, sin)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)
    assert torch.equal(got[:, HEADS + KV_HEADS :], qkv[:, HEADS + KV_HEADS :])  # v untouched


def test_compile_setting(monkeypatch):
    cpu, bf16, fp16, fp32 = torch.device("cpu"), torch.bfloat16, torch.float16, torch.float32
    monkeypatch.delenv(fused.COMPILE_ENV, raising=False)
    # auto: big bf16/fp16 models; fp32 stays eager (exact), tiny models are not worth it
    assert compile_wanted(1024, cpu, bf16) and compile_wanted(1024, cpu, fp16)
    assert not compile_wanted(1024, cpu, fp32) and not compile_wanted(64, cpu, bf16)
    assert not compile_wanted(1024, torch.device("cuda"), bf16)  # CPU only
    monkeypatch.setenv(fused.COMPILE_ENV, "0")
    assert not compile_wanted(1024, cpu, bf16)
    monkeypatch.setenv(fused.COMPILE_ENV, "1")  # fp32 and tiny models too
    assert compile_wanted(64, cpu, fp32) and compile_wanted(1024, cpu, fp32)
    assert not compile_wanted(1024, torch.device("cuda"), bf16)


def test_compile_mode_is_what_auto_means_and_the_environment_overrides_it(monkeypatch):
    cpu, bf16, fp32 = torch.device("cpu"), torch.bfloat16, torch.float32
    monkeypatch.delenv(fused.COMPILE_ENV, raising=False)
    assert not compile_wanted(1024, cpu, bf16, "off")  # a one-shot command: eager
    assert compile_wanted(64, cpu, fp32, "on")  # fp32 and tiny models too
    assert not compile_wanted(1024, torch.device("cuda"), bf16, "on")  # CPU only
    monkeypatch.setenv(fused.COMPILE_ENV, "1")
    assert compile_wanted(1024, cpu, bf16, "off")  # the operator's switch wins
    monkeypatch.setenv(fused.COMPILE_ENV, "0")
    assert not compile_wanted(64, cpu, fp32, "on")
    monkeypatch.setenv(fused.COMPILE_ENV, "auto")  # explicit auto leaves the mode
    assert not compile_wanted(1024, cpu, bf16, "off") and compile_wanted(64, cpu, fp32, "on")
    with pytest.raises(InvalidInputError, match="compile must be 'auto', 'on' or 'off'"):
        compile_wanted(1024, cpu, bf16, "yes")


def test_pending_until_every_function_ran(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    assert not FusedKernels(enabled=False).pending  # nothing to compile
    kernels = FusedKernels(enabled=True)
    assert kernels.pending
    kernels.rms_norm(*_args())
    assert kernels.pending  # qk_norm_rope still compiles on its first call
    qkv = torch.randn(4, HEADS + 2 * KV_HEADS, DIM)
    cos, sin = torch.randn(4, 1, DIM), torch.randn(4, 1, DIM)
    kernels.qk_norm_rope(qkv, torch.ones(DIM), torch.ones(DIM), cos, sin, 1e-6, HEADS, KV_HEADS)
    assert not kernels.pending and kernels.compiled == {"rms_norm": True, "qk_norm_rope": True}


def _args():
    x = torch.randn(5, DIM)
    return x, 1 + 0.1 * torch.randn(DIM), 1e-6


def test_compiler_failure_falls_back_to_eager(monkeypatch):
    def broken_compile(fn, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken_compile)
    kernels = FusedKernels(enabled=True)
    args = _args()
    assert torch.equal(kernels.rms_norm(*args), rms_norm(*args))
    assert not kernels.active("rms_norm") and kernels.compiled == {"rms_norm": False}
    assert torch.equal(kernels.rms_norm(*args), rms_norm(*args))


def test_wrong_compiled_result_is_not_used(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: lambda *a: fn(*a) + 1)
    kernels = FusedKernels(enabled=True)
    args = _args()
    assert torch.equal(kernels.rms_norm(*args), rms_norm(*args))  # the check caught it
    assert not kernels.active("rms_norm")


def test_compiled_kernel_failing_later_falls_back(monkeypatch):
    calls = []

    def flaky(fn, **kwargs):
        def run(*a):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("recompile failed")
            return fn(*a)

        return run

    monkeypatch.setattr(torch, "compile", flaky)
    kernels = FusedKernels(enabled=True)
    args = _args()
    kernels.rms_norm(*args)
    assert kernels.active("rms_norm")
    assert torch.equal(kernels.rms_norm(*args), rms_norm(*args))  # failed, eager answered
    assert not kernels.active("rms_norm")


@pytest.mark.slow
def test_compiled_decoder_scores_like_eager(qwen3_reranker, monkeypatch):
    """The real compiler (inductor, CPU) on the tiny model: same hidden states as eager."""
    from finerank.models.base import Pack, PackGroup

    model = qwen3_reranker.backend.decoder_model
    monkeypatch.setenv(fused.COMPILE_ENV, "1")
    compiled = PackedDecoder(model)
    monkeypatch.setenv(fused.COMPILE_ENV, "0")
    eager = PackedDecoder(model)
    pack = Pack([PackGroup(list(range(5, 40)), [(0, list(range(50, 90))), (1, [7, 8, 9])])])
    torch.testing.assert_close(
        compiled.last_hidden(pack), eager.last_hidden(pack), atol=1e-5, rtol=1e-5
    )
    if compiled.kernels.compiled != {"qk_norm_rope": True, "rms_norm": True}:
        pytest.skip(f"torch.compile unavailable here: {compiled.kernels.compiled}")
    other = Pack([PackGroup([], [(0, list(range(3, 200)))])])  # another length, same kernel
    torch.testing.assert_close(
        compiled.last_hidden(other), eager.last_hidden(other), atol=1e-5, rtol=1e-5
    )
