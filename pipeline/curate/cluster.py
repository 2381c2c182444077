"""Balanced sampling from a cluster hierarchy (Vo et al. 2024): the budget split equally at every level.

As the paper's src/hierarchical_sampling.py with multiplier 1 (an image is taken at most once): the target is
water-filled over the top-level clusters (equal shares, a cluster smaller than its share gives all it has and
the rest is shared among the others; the last few units go to random clusters among those still open), each
cluster's share is water-filled over its children the same way, down to the leaves, where `random` takes
random members and `closest` the members nearest the leaf centroid (paper: "r", "c").
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.curate.hkmeans import Level, cluster_sizes
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLING = ("random", "closest")


def split_evenly(budget: int, sizes: np.ndarray | list[int], rng: np.random.Generator | None = None
                 ) -> np.ndarray:
    """Water-filling: shares min(x, size) for the largest cut x whose total fits the budget, plus one for
    `budget - total` of the clusters larger than x (random ones with `rng`, else the first ones)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget >= sizes.sum():
        return sizes.copy()
    lo, hi = 0, int(sizes.max())  # total at lo fits the budget, at hi it does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if np.minimum(mid, sizes).sum() <= budget:
            lo = mid
        else:
            hi = mid
    shares = np.minimum(lo, sizes)
    rest = int(budget - shares.sum())  # fewer than the open clusters: the cut at lo + 1 overshoots
    open_ = np.flatnonzero(sizes > lo)
    shares[open_[:rest] if rng is None else rng.choice(open_, rest, replace=False)] += 1
    return shares


def grouped(parents: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(items ordered by parent, start of each parent's run): members of p = order[starts[p]:starts[p + 1]]."""
    order = np.argsort(parents, kind="stable")
    return order, np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=n_groups))])


def level_budgets(levels: list[Level], target: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Items to take under each cluster of every level, finest first, splitting the target from the top."""
    sizes = cluster_sizes(levels)
    budgets = [split_evenly(target, sizes[-1], rng)]
    for li in range(len(levels) - 1, 0, -1):  # level li's budgets → its children, the clusters of level li - 1
        below = np.zeros(levels[li - 1].k, np.int64)
        order, starts = grouped(levels[li].labels, levels[li].k)
        for c in np.flatnonzero(budgets[0]):
            kids = order[starts[c]:starts[c + 1]]
            below[kids] = split_evenly(int(budgets[0][c]), sizes[li - 1][kids], rng)
        budgets.insert(0, below)
    return budgets


def hierarchical_sample(levels: list[Level], target: int, sampling: str = "random", seed: int = 0) -> np.ndarray:
    """Sorted pool ids of min(target, N) images spread over the hierarchy (see the module docstring)."""
    if sampling not in SAMPLING:
        raise ConfigError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    rng = np.random.default_rng(seed)
    leaf = levels[0]
    budget = level_budgets(levels, target, rng)[0]
    order = np.lexsort((-leaf.sims, leaf.labels))  # by leaf, nearest its centroid first
    starts = np.concatenate([[0], np.cumsum(np.bincount(leaf.labels, minlength=leaf.k))])
    picks = []
    for c in np.flatnonzero(budget):
        members, take = order[starts[c]:starts[c + 1]], int(budget[c])
        if take >= len(members):
            picks.append(members)
        elif sampling == "closest":
            picks.append(members[:take])
        else:
            picks.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.empty(0, np.int64)
