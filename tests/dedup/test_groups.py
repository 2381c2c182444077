"""Grouping (pipeline/dedup/groups.py): connected components against a brute-force union-find."""

from __future__ import annotations

import numpy as np

from pipeline.dedup.groups import components


def test_components_brute_force_union_find():
    rng = np.random.default_rng(3)
    n = 200
    src, dst = rng.integers(0, n, 150), rng.integers(0, n, 150)
    component, sizes = components(n, src, dst)
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(src, dst):
        parent[find(a)] = find(b)
    for a in range(n):
        for b in range(n):
            assert (component[a] == component[b]) == (find(a) == find(b))
    assert sizes.sum() == n and component[0] == 0  # numbered by smallest member
