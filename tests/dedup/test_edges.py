"""Duplicate edges (pipeline/dedup/edges.py): pHash pairs against brute force, the graph's index choice."""

from __future__ import annotations

import numpy as np

from pipeline.dedup.edges import dedup_factory, phash_edges
from pipeline.io.phash import hamming64


def test_phash_edges_against_brute_force():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**63, 30, dtype=np.uint64)
    flips = [np.uint64(1) << np.uint64(int(b)) for b in rng.integers(0, 64, 60)]
    hashes = np.concatenate([base, base[:20] ^ np.array(flips[:20]) ^ np.array(flips[20:40])])
    i, j = phash_edges(hashes, 6)
    got = set(zip(i.tolist(), j.tolist()))
    want = {(a, b) for a in range(len(hashes)) for b in range(a + 1, len(hashes))
            if hamming64(int(hashes[a]), int(hashes[b])) <= 6}
    assert got == want and len(want) >= 20


def test_dedup_index_choice():
    assert dedup_factory(50_000, 384) == "Flat"
    assert dedup_factory(1_000_000, 384) == "IVF4000,PQ48x4fs"
    assert dedup_factory(1_000_000, 768) == "IVF4000,PQ96x4fs"
    # every vector is added and searched: the brute-force coarse quantizer stays at 4,096 lists past 1M
    assert dedup_factory(10_000_000, 384) == "IVF4096,PQ48x4fs"
