"""Balanced sampling from a hierarchy (pipeline/curate/cluster.py): water-filling splits, equal shares per level,
the leaf strategies, each against a brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.curate.cluster import hierarchical_sample, level_budgets, split_evenly
from pipeline.curate.hkmeans import Level
from pipeline.errors import ConfigError


def greedy_split(budget: int, sizes: list[int]) -> list[int]:
    """Brute force: one unit at a time to the open cluster holding least (ties: the first)."""
    shares = [0] * len(sizes)
    for _ in range(min(budget, sum(sizes))):
        i = min((s, i) for i, s in enumerate(shares) if s < sizes[i])[1]
        shares[i] += 1
    return shares


def water_filled(shares: np.ndarray, budget: int, sizes: list[int]) -> bool:
    """Shares that fill the budget, none above its size, and every cluster not given all it has holding at least
    as much as any other, less one."""
    shares, sizes = np.asarray(shares), np.asarray(sizes)
    short = shares < sizes
    return bool(shares.sum() == min(budget, sizes.sum()) and (shares <= sizes).all()
                and (not short.any() or shares[short].min() >= shares.max() - 1))


def test_split_evenly_is_water_filling():
    assert split_evenly(10, [1, 100, 100]).tolist() == [1, 5, 4]
    assert split_evenly(9, [2, 2, 100]).tolist() == [2, 2, 5]
    assert split_evenly(1000, [3, 7, 11]).tolist() == [3, 7, 11]
    assert split_evenly(0, [3, 7]).tolist() == [0, 0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 30, rng.integers(1, 12)).tolist()
        budget = int(rng.integers(0, sum(sizes) + 5))
        assert split_evenly(budget, sizes).tolist() == greedy_split(budget, sizes)
        shuffled = split_evenly(budget, sizes, np.random.default_rng(1))  # the paper's: extra units to random ones
        assert water_filled(shuffled, budget, sizes) and water_filled(greedy_split(budget, sizes), budget, sizes)
        assert np.abs(shuffled - split_evenly(budget, sizes)).max(initial=0) <= 1
    assert not water_filled(np.array([0, 3]), 3, [5, 5])  # the helper rejects an uneven split

def two_level_hierarchy() -> list[Level]:
    """12 points; leaves {0..3}, {4,5}, {6..10}, {11}; top clusters {leaf 0, leaf 1} and {leaf 2, leaf 3}."""
    leaf = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3])
    sims = np.array([.9, .5, .7, .8, .6, .95, .1, .2, .3, .4, .5, 1.], np.float32)
    return [Level(np.eye(4, dtype=np.float32), leaf, sims),
            Level(np.eye(2, 4, dtype=np.float32), np.array([0, 0, 1, 1]), np.ones(4, np.float32))]


def test_the_budget_is_split_equally_at_every_level():
    levels = two_level_hierarchy()
    top, leaves = level_budgets(levels, 7, np.random.default_rng(3))[::-1]
    assert sorted(top.tolist()) == [3, 4]  # 7 over two clusters of 6
    for t, kids, sizes in ((0, [0, 1], [4, 2]), (1, [2, 3], [5, 1])):
        assert water_filled(leaves[kids], int(top[t]), sizes)
    assert leaves[3] == 1  # a leaf smaller than its share gives all it has ({11}), its sibling takes the rest
    picked = hierarchical_sample(levels, 7, "random", seed=3)  # the same generator, drawn in the same order
    counts = np.bincount(levels[0].labels[picked], minlength=4)
    np.testing.assert_array_equal(counts, leaves)
    assert len(set(picked.tolist())) == 7 and (np.diff(picked) > 0).all()
    # a target above the pool: everything, once
    np.testing.assert_array_equal(hierarchical_sample(levels, 50), np.arange(12))


def test_closest_takes_the_points_nearest_each_leaf_centroid():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = x[:6] + 0.1
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    cos = x @ centroids.T
    labels = cos.argmax(1)
    leaf = Level(centroids, labels, cos[np.arange(300), labels])
    top = Level(np.ones((1, 8), np.float32), np.zeros(6, np.int64), np.ones(6, np.float32))
    budgets = level_budgets([leaf, top], 60, np.random.default_rng(0))[0]
    picked = hierarchical_sample([leaf, top], 60, "closest")
    assert len(picked) == 60
    for c in range(6):
        members = np.flatnonzero(labels == c)
        nearest = members[np.argsort(-cos[members, c], kind="stable")[:budgets[c]]]
        assert set(picked[labels[picked] == c].tolist()) == set(nearest.tolist())
    random_pick = hierarchical_sample([leaf, top], 60, "random", seed=1)
    np.testing.assert_array_equal(np.bincount(labels[random_pick], minlength=6), budgets)
    np.testing.assert_array_equal(random_pick, hierarchical_sample([leaf, top], 60, "random", seed=1))
    assert not np.array_equal(random_pick, picked)
    with pytest.raises(ConfigError, match="sampling must be one of"):
        hierarchical_sample([leaf, top], 10, "nearest")
