"""Measuring helpers for the benchmark: peak memory, timing, rank agreement, GPU FLOP limits."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import torch

# Dense bf16 tensor-core peak (FLOP/s) of common GPUs, from the vendors' data sheets (SXM parts
# where there are several). Used only to put measured tokens/s next to the hardware limit.
GPU_BF16_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "A6000": 155e12,
}
#: forward FLOPs per token of Qwen3-Reranker-0.6B (2 x non-embedding parameters)
QWEN3_06B_FLOP_PER_TOKEN = 0.881e9


def gpu_bf16_peak(name: str) -> float | None:
    """Peak dense bf16 FLOP/s for a CUDA device name, or None when unknown.

    Example:
        >>> gpu_bf16_peak("NVIDIA H100 80GB HBM3")
        989000000000000.0
    """
    for key in sorted(GPU_BF16_PEAK_FLOPS, key=len, reverse=True):
        if key in name:
            return GPU_BF16_PEAK_FLOPS[key]
    return None


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or sampled process RSS on CPU.

    ``peak_mb`` is the absolute peak, ``delta_mb`` the peak above the level at entry (what the
    measured work added on top of the loaded model).

    Example:
        >>> with PeakMemory(torch.device("cpu")) as mem:
        ...     _ = bytearray(50 * 2**20)
        >>> mem.delta_mb >= 0
        True
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.peak_mb = 0.0
        self.delta_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            from finerank.models.allocator import trim

            trim()  # start from what is in use, not from free memory the heap keeps
            self._start = _rss_bytes()
            self._peak = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mb = peak / 2**20
        self.delta_mb = max(0, peak - self._start) / 2**20


def timed(func, device: torch.device):
    """Run ``func()``; return (result, seconds), synchronizing CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = func()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - started


def matmul_gflops(
    dtype: torch.dtype,
    device: torch.device | None = None,
    *,
    size: int = 1024,
    min_seconds: float = 0.3,
    clock=time.perf_counter,
) -> float:
    """GFLOP/s of a plain ``size`` x ``size`` x ``size`` matmul in ``dtype`` (the machine's
    ceiling for the work a transformer does, on the threads torch uses now).

    Repeats the product until ``min_seconds`` have passed (after one warm-up) and returns the
    best of three such runs, so a busy machine's slowest moments do not count. ``clock``
    (default wall time; ``time.process_time`` for this process's CPU time) times the runs.

    Example:
        >>> matmul_gflops(torch.float32, size=64, min_seconds=0.01) > 0
        True
    """
    device = device or torch.device("cpu")
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    flops = 2 * size**3
    best = 0.0
    with torch.inference_mode():
        a @ b
        for _ in range(3):
            count = 0
            started = clock()
            while True:
                a @ b
                count += 1
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = clock() - started
                if seconds >= min_seconds:
                    break
            best = max(best, flops * count / seconds / 1e9)
    return best


def matmul_ceiling(
    dtype: torch.dtype,
    device: torch.device | None = None,
    *,
    min_seconds: float = 0.2,
    clock=time.perf_counter,
    sizes: Sequence[int] = (1024, 2048),
) -> float:
    """The best :func:`matmul_gflops` over square ``sizes``: what this machine's matmul
    library reaches in ``dtype``, the ceiling finerank's GFLOP/s are divided by.

    Example:
        >>> matmul_ceiling(torch.float32, sizes=(32, 64), min_seconds=0.01) > 0
        True
    """
    return max(
        matmul_gflops(dtype, device, size=size, min_seconds=min_seconds, clock=clock)
        for size in sizes
    )


def decoder_flops(config, segments: Sequence[tuple[int, int]]) -> dict[str, float]:
    """Forward FLOPs of a Qwen3 decoder over ``segments`` of (query rows, key rows).

    ``linear`` counts the projections and the MLP of every computed token (a shared prefix
    once); ``attention`` the QK^T and PV products, causal (a tail sees its prefix, then
    itself). The embedding lookup and the two-row yes/no head are left out.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=1,
        ...                       num_attention_heads=2, num_key_value_heads=1, head_dim=2)
        >>> decoder_flops(cfg, [(3, 3)])
        {'linear': 864.0, 'attention': 96.0, 'total': 960.0}
    """
    hidden, inter = config.hidden_size, config.intermediate_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    layers = config.num_hidden_layers
    per_token = 2 * (
        hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden + 3 * hidden * inter
    )
    tokens = sum(q for q, _ in segments)
    # query row j of a segment sees (k - q) + j + 1 keys
    pairs = sum(q * (k - q) + q * (q + 1) / 2 for q, k in segments)
    linear = float(per_token * tokens * layers)
    attention = float(4 * heads * head_dim * pairs * layers)
    return {"linear": linear, "attention": attention, "total": linear + attention}


def pack_segments(packs) -> list[tuple[int, int]]:
    """(query rows, key rows) of every attention segment of ``packs`` (see :func:`decoder_flops`).

    Example:
        >>> from finerank.models.base import Pack, PackGroup
        >>> pack_segments([Pack([PackGroup([1, 2], [(0, [3]), (1, [4, 5])])])])
        [(2, 2), (1, 3), (2, 4)]
    """
    segments: list[tuple[int, int]] = []
    for pack in packs:
        for group in pack.groups:
            prefix = len(group.prefix)
            if prefix:
                segments.append((prefix, prefix))
            segments.extend((len(tail), prefix + len(tail)) for _, tail in group.members)
    return segments


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists over the same items (1.0 = same ranking).

    Example:
        >>> kendall_tau([0.1, 0.5, 0.9], [1, 2, 3])
        1.0
        >>> kendall_tau([0.1, 0.5, 0.9], [3, 2, 1])
        -1.0
    """
    if len(a) != len(b):
        raise ValueError("score lists differ in length")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else 1.0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]).

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line through (xs, ys): (slope, intercept, r^2).

    Example:
        >>> linear_fit([1, 2, 3], [3, 5, 7])
        (2.0, 1.0, 1.0)
    """
    n = len(xs)
    if n < 2:
        return (0.0, float(ys[0]) if ys else 0.0, 1.0)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else 0.0
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    return (slope, intercept, 1.0 - ss_res / ss_tot if ss_tot else 1.0)
