"""Big CPU buffers stay in the heap once a model loads on CPU (glibc), unless told not to."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from finerank.models import allocator

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Allocates, fills and frees a 256 MiB tensor 16 times, in the main thread and in a new one
# like the engine's worker, and prints the page faults of the last 4 times. glibc does not
# always reuse a freed block for the next 64-byte-aligned request of the same size at once
# (it depends on where the heap starts): the heap may grow by up to ~8 such blocks first,
# then it serves them from what it holds.
_PROBE = """
import json, resource, sys, threading
import torch
from finerank.models.allocator import keep_buffers_in_heap

status = keep_buffers_in_heap()
elements = 64 << 20  # 256 MiB of fp32
faults = {}

def touch(name):
    for _ in range(12):
        torch.empty(elements).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.empty(elements).fill_(1.0)
    faults[name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

touch("main")
worker = threading.Thread(target=touch, args=("thread",))
worker.start()
worker.join()
print(json.dumps({"status": status, **faults}))
"""

PAGES = (256 << 20) // 4096


def _probe(code: str = _PROBE, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (the tuning is once per process) with no malloc
    settings of the caller's plus ``env``; the JSON it printed last."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("FINERANK_MALLOC", None)
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@glibc
def test_a_freed_big_buffer_is_reused_without_page_faults():
    tuned = _probe()
    assert tuned["status"].startswith("malloc: buffers up to 1 GiB kept in the heap")
    # glibc's default maps a 256 MiB block afresh every time: one fault per 4 KiB page
    assert tuned["main"] < PAGES // 10
    assert tuned["thread"] < PAGES // 10


@glibc
def test_finerank_malloc_0_keeps_glibcs_defaults():
    plain = _probe(FINERANK_MALLOC="0")
    assert plain["status"] == "malloc left as is (FINERANK_MALLOC=0)"
    assert plain["main"] > 2 * PAGES


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"FINERANK_MALLOC": "off"}, "FINERANK_MALLOC=0"),
        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "jemalloc preloaded"),
        ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "tcmalloc preloaded"),
        ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX set"),
        ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_MMAP_THRESHOLD_ set"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, "GLIBC_TUNABLES sets"),
    ],
)
def test_the_users_own_malloc_setup_wins(environ, reason):
    assert reason in allocator._tune(environ)


def test_nothing_set_means_tuning():
    assert allocator._user_choice({"FINERANK_MALLOC": "auto", "LD_PRELOAD": ""}) is None


_RELEASE_PROBE = """
import json
import torch
from finerank.models import allocator

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20

allocator.keep_buffers_in_heap()
with allocator.model_run():
    blocks = [torch.empty(16 << 20).fill_(1.0) for _ in range(8)]  # 8 x 64 MiB
    del blocks
held = resident_mib()
too_soon = allocator.release_when_idle(60.0)
released = allocator.release_when_idle(0.0)
after = resident_mib()
again = allocator.release_when_idle(0.0)
print(json.dumps({"held": held, "after": after, "too_soon": too_soon, "released": released,
                  "again": again}))
"""


@glibc
def test_idle_release_gives_the_freed_heap_back_once():
    got = _probe(_RELEASE_PROBE)
    assert not got["too_soon"], "released although the last run ended less than idle_s ago"
    assert got["released"]
    assert got["held"] - got["after"] > 400  # of the 512 MiB freed into the heap
    assert not got["again"], "released twice with no run in between"
