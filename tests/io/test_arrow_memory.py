"""release_arrow_memory hands what Arrow freed back to the kernel (dedup calls it before its largest blocks)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.arrow_memory import release_arrow_memory


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_memory_arrow_freed_leaves_the_process():
    pc.dictionary_encode(pc.cast(pa.array(np.arange(1000)), pa.string()))  # the kernels' first-use state
    release_arrow_memory()
    before = rss_bytes()
    values = pa.array(np.random.default_rng(0).integers(0, 1 << 40, 4_000_000))  # Arrow's pool: 32 MB
    grouped = pc.dictionary_encode(pc.cast(values, pa.string()))  # ~350 MB resident at its peak, freed below
    assert len(grouped) == 4_000_000
    del values, grouped
    release_arrow_memory()
    assert pa.total_allocated_bytes() < 1 << 20  # nothing of it is live
    assert rss_bytes() - before < 40 << 20  # and its pages are not kept resident either
