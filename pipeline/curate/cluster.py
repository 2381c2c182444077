"""Hierarchical k-means with balanced sampling, for curation (the k-means itself: pipeline.index.kmeans)."""

from __future__ import annotations

import logging

import numpy as np

from pipeline.index.kmeans import kmeans

log = logging.getLogger(__name__)


def hierarchical_kmeans(x: np.ndarray, ks: list[int], seed: int = 0) -> list[np.ndarray]:
    """Levels of k-means, each on the centroids of the level below (Vo et al. 2024); returns each point's
    cluster at every level, finest first."""
    labels = []
    points, point_label = x, None
    for level, k in enumerate(ks):
        centroids, a = kmeans(points, k, seed=seed + level)
        point_label = a if point_label is None else a[point_label]
        labels.append(point_label)
        points = centroids
    return labels


def balanced_sample(labels: list[np.ndarray], target: int, seed: int = 0) -> np.ndarray:
    """Ids of `target` points spread as evenly as the hierarchy allows: at each level the budget is split
    equally between child clusters, small ones taking all they have and passing the rest on."""
    rng = np.random.default_rng(seed)
    n = len(labels[0])
    target = min(target, n)
    ids = np.arange(n)

    def pick(members: np.ndarray, budget: int, level: int) -> list[np.ndarray]:
        if budget >= len(members):
            return [members]
        if level < 0:
            return [rng.choice(members, budget, replace=False)]
        groups = [members[labels[level][members] == c] for c in np.unique(labels[level][members])]
        shares = split_evenly(budget, [len(g) for g in groups])
        return [part for g, s in zip(groups, shares) if s for part in pick(g, s, level - 1)]

    return np.sort(np.concatenate(pick(ids, target, len(labels) - 1)))


def split_evenly(budget: int, sizes: list[int]) -> list[int]:
    """Water-filling: equal shares, capped by each size, leftovers shared among the larger ones."""
    shares = [0] * len(sizes)
    open_ = [i for i, s in enumerate(sizes) if s > 0]
    left = budget
    while left > 0 and open_:
        each = max(1, left // len(open_))
        for i in list(open_):
            give = min(each, sizes[i] - shares[i], left)
            shares[i] += give
            left -= give
            if shares[i] == sizes[i]:
                open_.remove(i)
            if left == 0:
                break
    return shares
