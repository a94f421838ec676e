"""The elementwise chains of a Qwen3 layer as single kernels: ``torch.compile`` (inductor's CPU
backend) over the module's own formulas, with an eager fallback.

Eager PyTorch runs a Qwen3 RMSNorm as five passes over memory (convert to fp32, square, mean,
scale, weight and convert back) and RoPE as four; on the CPU path they took a third of a bf16
layer at 1,000-token packs. Compiled, each chain is one loop that reads its input once:

* :func:`qk_norm_rope`: the per-head q and k RMSNorms and the rotary embedding of a packed
  ``[tokens, heads + 2 * kv_heads, head_dim]`` q|k|v, v passed through;
* :func:`rms_norm`: the hidden-state RMSNorm.

Shapes are dynamic (``dynamic=True``): packs of any length share one compiled kernel per
dtype and model shape. :class:`FusedKernels` compiles on first use, checks the compiled result
against the eager one on that first input and keeps eager for good when compiling fails (no C++
compiler, an unsupported build) or the two disagree.

What ``FINERANK_COMPILE=auto`` compiles (:func:`compile_wanted`): bf16/fp16 models on CPU with
a hidden size of at least :data:`COMPILE_MIN_HIDDEN`. fp32 runs eager, so fp32 scores stay the
reference's own arithmetic: compiled reductions sum in another order (0.6B scores moved by up to
6.4e-7 on 16 seed pairs) for a gain within noise in fp32. ``FINERANK_COMPILE=1`` compiles fp32
(and tiny models) too.

Compiling costs tens of seconds on the first call (see docs/engine.md): servers pay it at start
(:meth:`FusedKernels.pending` says a warm-up forward is due, see
:meth:`finerank.engine.engine.ScoringEngine.warm_up`), not on a user's first request. A
one-shot command (``finerank rerank``) loads its model with ``compile="off"``
(:data:`CompileMode`): one request saves less than compiling costs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Literal

import torch

from finerank.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: ``FINERANK_COMPILE``: ``auto`` (compile on CPU for bf16/fp16 models with a hidden size of at
#: least :data:`COMPILE_MIN_HIDDEN`; fp32 stays eager, the reference's own arithmetic), ``1``
#: (always on CPU: fp32 and tiny models too) or ``0`` (never)
COMPILE_ENV = "FINERANK_COMPILE"
#: what a caller asks for (``compile=`` of :meth:`finerank.Reranker.from_pretrained`): ``auto``
#: (the rule above), ``on`` (always on CPU), ``off`` (never; one-shot commands, where compiling
#: costs more than it saves). ``FINERANK_COMPILE=1`` or ``0`` overrides it, ``auto`` leaves it.
CompileMode = Literal["auto", "on", "off"]
#: below this hidden size compiling (tens of seconds on 2 cores) costs more than it saves
COMPILE_MIN_HIDDEN = 512
#: what a warm-up forward reads (:func:`timed_warm_up`): texts of a few tokens
WARM_UP_TEXTS = ("a short document", "another short document")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """A Qwen3 RMSNorm, the module's arithmetic: statistics and scaling in fp32, rounded to
    ``x``'s dtype before the weight."""
    xf = x.to(torch.float32)
    scaled = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * scaled.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def qk_norm_rope(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
    heads: int,
    kv_heads: int,
) -> torch.Tensor:
    """A new q|k|v with q and k RMS-normed per head and rotated (``cos``/``sin``:
    ``[tokens, 1, head_dim]``); v unchanged."""
    q = _rotate(rms_norm(qkv[:, :heads], q_weight, eps), cos, sin)
    k = _rotate(rms_norm(qkv[:, heads : heads + kv_heads], k_weight, eps), cos, sin)
    return torch.cat([q, k, qkv[:, heads + kv_heads :]], dim=1)


def _setting() -> str:
    value = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if value in ("0", "false", "no", "off"):
        return "0"
    return "1" if value in ("1", "true", "yes", "on") else "auto"


def timed_warm_up(forward: Callable[[], object]) -> float:
    """Run ``forward`` (a short forward whose kernels compile, on :data:`WARM_UP_TEXTS`) and
    log it; the seconds it took. The reranker's engine and the embedder both warm up here."""
    started = time.perf_counter()
    forward()
    seconds = time.perf_counter() - started
    logger.info("warm-up forward (compiling kernels) took %.1f s", seconds)
    return seconds


def check_compile_mode(mode: str) -> CompileMode:
    """``mode`` when it is a :data:`CompileMode`, else :class:`InvalidInputError`."""
    if mode not in ("auto", "on", "off"):
        raise InvalidInputError(f"compile must be 'auto', 'on' or 'off', got {mode!r}")
    return mode  # type: ignore[return-value]


def compile_wanted(
    hidden_size: int, device: torch.device, dtype: torch.dtype, mode: CompileMode = "auto"
) -> bool:
    """Whether :class:`FusedKernels` should compile for a model of ``hidden_size`` in ``dtype``
    on ``device`` (CPU only).

    Args:
        hidden_size: the model's hidden size.
        device: where the model runs.
        dtype: the model's dtype.
        mode: what the caller asks for (:data:`CompileMode`); ``FINERANK_COMPILE=1`` or ``0``
            in the environment overrides it.

    Returns:
        True when the kernels should compile.

    Example (``FINERANK_COMPILE`` unset):
        >>> cpu = torch.device("cpu")
        >>> compile_wanted(1024, cpu, torch.bfloat16), compile_wanted(1024, cpu, torch.float32)
        (True, False)
        >>> compile_wanted(1024, cpu, torch.bfloat16, "off")  # a one-shot command
        False
    """
    mode = check_compile_mode(mode)
    setting = _setting()
    if setting == "auto":
        setting = {"on": "1", "off": "0"}.get(mode, "auto")
    if device.type != "cpu" or setting == "0":
        return False
    if setting == "1":
        return True
    return dtype in (torch.bfloat16, torch.float16) and hidden_size >= COMPILE_MIN_HIDDEN


class FusedKernels:
    """:func:`qk_norm_rope` and :func:`rms_norm`, compiled when ``enabled`` and that works
    here, eager otherwise (per function, decided on its first call).

    Example:
        >>> kernels = FusedKernels(enabled=False)
        >>> x = torch.tensor([[3.0, 4.0]])
        >>> kernels.rms_norm(x, torch.ones(2), 0.0).tolist()  # x / sqrt(mean(x^2))
        [[0.8485281467437744, 1.1313709020614624]]
    """

    #: the functions compiled (each on its first call)
    NAMES = ("qk_norm_rope", "rms_norm")
    #: max |compiled - eager| accepted by the first-use check, per dtype
    TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 6e-2, torch.float16: 1e-2}

    def __init__(self, *, enabled: bool):
        self.enabled = enabled
        # name -> compiled callable, or None once it fell back to eager
        self._compiled: dict[str, object] = {}

    @property
    def compiled(self) -> dict[str, bool]:
        """Which functions run compiled (after their first call)."""
        return {name: fn is not None for name, fn in self._compiled.items()}

    @property
    def pending(self) -> bool:
        """Whether the next forward compiles (enabled, and a function not yet called): a
        server runs a warm-up forward at start then."""
        return self.enabled and len(self._compiled) < len(self.NAMES)

    def active(self, name: str) -> bool:
        """Whether ``name`` runs (or will try to run) compiled: callers keep their own eager
        code otherwise."""
        return self.enabled and self._compiled.get(name, True) is not None

    def qk_norm_rope(self, *args) -> torch.Tensor:
        return self._call("qk_norm_rope", qk_norm_rope, args)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return self._call("rms_norm", rms_norm, (x, weight, eps))

    def _call(self, name: str, eager, args) -> torch.Tensor:
        if not self.enabled:
            return eager(*args)
        if name not in self._compiled:
            return self._first_call(name, eager, args)
        compiled = self._compiled[name]
        if compiled is None:
            return eager(*args)
        try:
            return compiled(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # e.g. a recompile for a new shape failed: eager from now
            logger.warning("compiled %s failed, running eager from now on: %s", name, error)
            self._compiled[name] = None
            return eager(*args)

    def _first_call(self, name: str, eager, args) -> torch.Tensor:
        expected = eager(*args)
        try:
            compiled = torch.compile(eager, dynamic=True)
            got = compiled(*args)
            tolerance = self.TOLERANCE.get(expected.dtype, 1e-4)
            difference = (got.float() - expected.float()).abs().max().item()
            if got.shape != expected.shape or not difference <= tolerance:
                raise RuntimeError(f"compiled {name} differs from eager by {difference}")
        except Exception as error:  # no compiler, unsupported build, wrong result: eager
            logger.warning("torch.compile of %s unavailable, running eager: %s", name, error)
            self._compiled[name] = None
            return expected
        self._compiled[name] = compiled
        return expected
