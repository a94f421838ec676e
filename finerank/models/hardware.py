"""What the CPU can do in bf16 (native bf16 matrix units or emulation).

bf16 on a CPU is fast only with native bf16 matrix instructions: Intel AMX (``amx_bf16``,
Sapphire Rapids and later) or AVX512-BF16 (``avx512_bf16``: Cooper Lake, AMD Zen 4 and later).
Without them PyTorch emulates bf16 and a matmul runs ~8x *slower* than fp32 (measured on an
AVX2 machine: 3.4 vs 18 GFLOP/s); with them it is 2-9x faster (see docs/engine.md).

Example:
    >>> info = cpu_bf16_support()
    >>> info.native in (True, False)
    True
    >>> cpu_bf16_support(flags={"avx2", "avx512_bf16"}).units
    'AVX512_BF16'
    >>> cpu_bf16_support(flags={"avx2"}).native
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch


@dataclass(frozen=True)
class CpuBf16Support:
    """Native bf16 matrix units of this CPU.

    ``units`` is ``"AMX"``, ``"AVX512_BF16"`` or ``None``; ``source`` says where that was read
    (``torch`` capability query, ``/proc/cpuinfo`` flags, or given ``flags``).
    """

    native: bool
    units: str | None
    source: str

    def describe(self) -> str:
        """One line for logs: ``native bf16 (AMX)`` or ``no native bf16 (bf16 is emulated)``."""
        if self.native:
            return f"native bf16 ({self.units})"
        return "no native bf16 (bf16 is emulated, several times slower than fp32)"


def _classify(amx: bool, avx512_bf16: bool, source: str) -> CpuBf16Support:
    if amx:
        return CpuBf16Support(True, "AMX", source)
    if avx512_bf16:
        return CpuBf16Support(True, "AVX512_BF16", source)
    return CpuBf16Support(False, None, source)


def _cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


@lru_cache(maxsize=1)
def _detected() -> CpuBf16Support:
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        try:
            caps = capabilities()
            return _classify(bool(caps.get("amx_bf16")), bool(caps.get("avx512_bf16")), "torch")
        except Exception:  # a capability query that fails falls back to the kernel's flags
            pass
    flags = _cpuinfo_flags()
    if flags is not None:
        return _classify("amx_bf16" in flags, "avx512_bf16" in flags, "/proc/cpuinfo")
    return CpuBf16Support(False, None, "unknown")


def cpu_bf16_support(flags: set[str] | None = None) -> CpuBf16Support:
    """Detect native bf16 units (``flags``: classify these cpuinfo flags instead).

    Args:
        flags: CPU flag names as in ``/proc/cpuinfo`` (for tests and other machines' reports).

    Returns:
        A :class:`CpuBf16Support`; detection is cached for the process.
    """
    if flags is not None:
        return _classify("amx_bf16" in flags, "avx512_bf16" in flags, "flags")
    return _detected()


def dtype_report(device: torch.device, dtype: torch.dtype) -> str:
    """One line for the ready log: the dtype in use and the fastest one on this machine.

    Example:
        >>> "float32" in dtype_report(torch.device("cpu"), torch.float32)
        True
    """
    name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        return f"dtype {name} on {device} (bfloat16 is the fast path on GPUs)"
    support = cpu_bf16_support()
    fastest = "bfloat16" if support.native else "float32"
    line = f"dtype {name} on CPU: {support.describe()}; fastest here: {fastest}"
    if name != "float32":
        line += " (float32 gives scores equal to the reference code)"
    elif fastest != name:
        line += " (--dtype bfloat16 to use it; float32 keeps scores equal to the reference code)"
    return line
