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


def test_keep_highest_against_a_brute_force_choice_for_keys_as_a_list_or_arrow():
    """The highest score of each component wins, a tie goes to the smallest key in Python's string order (Arrow's
    UTF-8 byte order agrees, non-ASCII keys included); only grouped rows are ranked, every single row is kept."""
    import pyarrow as pa

    from pipeline.dedup.groups import keep_highest

    rng = np.random.default_rng(4)
    n = 400
    component = rng.integers(0, 150, n)
    score = rng.integers(0, 3, n)  # many ties
    alphabet = ["a", "b", "Z", "é", "ß", "日", "0", "~"]
    keys = ["".join(rng.choice(alphabet, rng.integers(1, 5))) + f"/{i:03d}" for i in rng.permutation(n)]
    want = np.zeros(n, bool)
    for c in np.unique(component):
        rows = np.flatnonzero(component == c)
        want[min(rows, key=lambda r: (-score[r], keys[r]))] = True
    assert (np.bincount(component) > 1).sum() > 50
    for given in (keys, pa.array(keys), pa.chunked_array([keys[:77], keys[77:]])):
        assert np.array_equal(keep_highest(component, score, given), want)
    assert keep_highest(np.zeros(0, np.int64), np.zeros(0), []).shape == (0,)
