"""release_freed_memory hands what Arrow and glibc keep of freed memory back to the kernel (dedup calls it before
its largest blocks)."""

from __future__ import annotations

import platform

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.io.freed_memory import release_freed_memory


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_memory_arrow_freed_leaves_the_process():
    pc.dictionary_encode(pc.cast(pa.array(np.arange(1000)), pa.string()))  # the kernels' first-use state
    release_freed_memory()
    before = rss_bytes()
    values = pa.array(np.random.default_rng(0).integers(0, 1 << 40, 4_000_000))  # Arrow's pool: 32 MB
    grouped = pc.dictionary_encode(pc.cast(values, pa.string()))  # ~350 MB resident at its peak, freed below
    assert len(grouped) == 4_000_000
    del values, grouped
    release_freed_memory()
    assert pa.total_allocated_bytes() < 1 << 20  # nothing of it is live
    assert rss_bytes() - before < 40 << 20  # and its pages are not kept resident either


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's heap")
def test_holes_in_glibcs_heap_leave_the_process():
    release_freed_memory()
    before = rss_bytes()
    blocks = [np.ones(100_000 // 8) for _ in range(2000)]  # 200 MB in heap-sized blocks (below mmap's threshold)
    kept = blocks[::20]  # one in twenty stays: the freed ones are holes below the heap's top, never trimmed
    del blocks
    assert rss_bytes() - before > 150 << 20  # glibc keeps them
    release_freed_memory()
    assert rss_bytes() - before < 40 << 20
    assert sum(b.sum() for b in kept) == 100 * 100_000 // 8
