"""PeakMemory on CPU measures what the block adds, also when the heap keeps freed memory."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

# A 256 MiB block freed into the heap (kept there: keep_buffers_in_heap), then a block of the
# same size allocated and filled inside PeakMemory: the heap's kept pages must not hide it.
_PROBE = """
import json, sys
import torch
from finerank.bench.measure import PeakMemory
from finerank.models.allocator import keep_buffers_in_heap

keep_buffers_in_heap()
torch.empty(64 << 20).fill_(1.0)  # freed at once, kept in the heap
with PeakMemory(torch.device("cpu"), interval=0.001) as mem:
    block = torch.empty(64 << 20).fill_(1.0)
print(json.dumps({"delta_mb": mem.delta_mb}))
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_cpu_peak_is_not_hidden_by_memory_the_heap_keeps():
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("FINERANK_MALLOC", None)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    delta = json.loads(done.stdout.strip().splitlines()[-1])["delta_mb"]
    assert delta > 200, delta  # the 256 MiB block
