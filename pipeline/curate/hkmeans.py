"""Hierarchical k-means with resampling (Vo et al. 2024), spherical and seeded on Faiss, over streamed rows.

Read from the paper's code (facebookresearch/ssl-data-curation: src/hierarchical_kmeans_gpu.py,
scripts/run_distributed_kmeans.py, configs/*.yaml). One level: k-means on the level's items, then R resampling
steps, each of which takes from every cluster its `s` items closest to the centroid (or `s` random ones), runs a
fresh k-means (k-means++ seeded) on the union of those k·s items, and reassigns every item to the new centroids.
Level l + 1 clusters the centroids of level l. Where we differ, and why:
- spherical k-means (unit centroids, cosine) where the paper uses L2 k-means: our vectors are unit-norm;
- 20 Lloyd iterations (Faiss's default) where the paper runs 50; each k-means trains on at most
  `max_points_per_centroid` items per cluster (64 on the pool level: a CPU budget and the float32 working set),
  a random subset for the first k-means, and the resample size is capped to it;
- `steps` counts the resampling steps after the first k-means (0 = plain); the paper's launcher counts that
  first k-means as step 1 (its `n_resampling_steps: 10` = our 9), its hierarchical_kmeans_gpu.py as we do;
- the paper splits its 10M leaves from 100k k-means clusters (n_splits) for speed: not done here;
- default steps: on the leaf level, not above (the paper's config: above, not on the leaves); see TIERS.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipeline.curate.vectors import ArraySource, VectorSource
from pipeline.errors import ConfigError
from pipeline.index.kmeans import assign, kmeans

log = logging.getLogger(__name__)

RESAMPLING = ("closest", "random")  # which s items of a cluster a resampling step keeps (paper: "c", "r")
POOL_POINTS_PER_CENTROID = 64  # k-means training items per cluster on the pool level (upper levels: 256)


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy: its centroids, and for each item of the level below (the pool's rows on the
    first level, the centroids of the level below on the others) its cluster and cosine to that centroid."""

    centroids: np.ndarray  # (k, d) float32, unit rows
    labels: np.ndarray  # (items,) int64
    sims: np.ndarray  # (items,) float32

    @property
    def k(self) -> int:
        return len(self.centroids)


@dataclass(frozen=True)
class HierarchyPlan:
    """Clusters, resampling steps and resample size (items kept per cluster) of every level, finest first."""

    ks: tuple[int, ...]
    steps: tuple[int, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"every level needs at least one cluster, got levels {list(self.ks)}")
        if any(b > a for a, b in zip(self.ks, self.ks[1:])):
            raise ConfigError(f"levels go from the finest to the coarsest: {list(self.ks)} grows")
        if len(self.steps) != len(self.ks) or len(self.sizes) != len(self.ks):
            raise ConfigError(f"give resampling steps and sizes for each of the {len(self.ks)} levels, or one "
                              f"value for all (got steps {list(self.steps)}, sizes {list(self.sizes)})")
        if min(self.steps) < 0 or min(self.sizes) < 1:
            raise ConfigError(f"resampling steps must be >= 0 and sizes >= 1, got {list(self.steps)}, "
                              f"{list(self.sizes)}")


# Default levels by pool size (docs/curate.md "Balanced sampling"): pool at most → (levels, leaf clusters at most,
# resampling steps on the leaf level). The paper's 743M-image run: 10M / 500k / 50k / 10k clusters, 10 resampling
# steps on every level but the first (skipped for its cost). Ours are scaled down to what k-means on CPUs can do:
# leaves ~3.5·√N (over-clustered, so rare modes get leaves of their own), the levels above 10× then 5× coarser
# (4 levels: 20×, 10×, 5×, the paper's ratios). Where the steps go is the other way round from the paper's
# config, on evidence: benchmarks/long_tail.py (100k × 64, 949 power-law concepts, 5 images per concept)
# selects 90.9 % of the rare half of the concepts with 10 steps on the leaves only, 88.0 % with 10 on every
# level, 70.0 % without resampling and 66.7 % with 10 steps on the upper levels only (54.2 % at random): our
# leaves are coarse (~500 images at 1M, the paper's ~74), so the density bias to undo is in them, and resampling
# the near-uniform leaf centroids above only adds noise. A leaf step costs one k-means and one pass over the
# pool, so pools above 2M get 3 (at 20k × 384: 62.3 % without, 63.2 % with 1 step, 77.8 % with 3, 83.0 % with
# 10; random 69.3 %). --resample-steps overrides.
TIERS = ((2_000_000, (3, 2048, 10)), (20_000_000, (4, 16_384, 3)), (math.inf, (4, 65_536, 3)))
UPPER_STEPS = 0  # resampling steps on each level above the leaves (the paper: 10; see above)


def resolve_plan(n: int, levels: int | None = None, ks: tuple[int, ...] = (), steps: tuple[int, ...] = (),
                 sizes: tuple[int, ...] = ()) -> HierarchyPlan:
    """The levels for a pool of n items: `ks` as given, or `levels` (default: by pool size) levels under the
    rules above; steps by pool size on the leaves and 0 above; sizes half the mean cluster size of the level
    (the paper's rule: 10, 5, 3 for clusters of 20, 10, 5). One value given for steps or sizes is every level's."""
    tier_levels, cap, leaf_steps = next(tier for top, tier in TIERS if n <= top)
    if not ks:
        levels = levels or tier_levels
        ks = [max(2, min(n // 16, int(3.5 * math.sqrt(n)), cap))]
        for r in ([20] * levels + [20, 10, 5])[-(levels - 1):] if levels > 1 else []:  # the top: 20×, 10×, 5×
            ks.append(min(ks[-1], max(2, ks[-1] // r)))
    ks = tuple(int(k) for k in ks)
    items = (n,) + ks[:-1]
    steps = tuple(steps) or (leaf_steps,) + (UPPER_STEPS,) * (len(ks) - 1)
    sizes = tuple(sizes) or tuple(max(1, math.ceil(m / k / 2)) for m, k in zip(items, ks))
    return HierarchyPlan(ks, steps * len(ks) if len(steps) == 1 else steps,
                         sizes * len(ks) if len(sizes) == 1 else sizes)


def assign_all(source: VectorSource, centroids: np.ndarray, progress: bool = False, desc: str = "assign"
               ) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid, cosine to it) of every row, a chunk at a time."""
    labels = np.empty(source.count, np.int64)
    sims = np.empty(source.count, np.float32)
    with tqdm(total=source.count, unit="vec", disable=not progress, desc=desc, leave=False) as bar:
        for start, rows in source.chunks():
            a = assign(rows, centroids)
            labels[start:start + len(rows)] = a
            sims[start:start + len(rows)] = np.einsum("ij,ij->i", rows, centroids[a])
            bar.update(len(rows))
    return labels, sims


def resample(labels: np.ndarray, sims: np.ndarray, size: int, strategy: str, rng: np.random.Generator
             ) -> np.ndarray:
    """Sorted ids of at most `size` items per cluster: those closest to its centroid, or random ones."""
    if strategy not in RESAMPLING:
        raise ConfigError(f"resampling strategy must be one of {RESAMPLING}, got {strategy!r}")
    key = -sims if strategy == "closest" else rng.random(len(labels))
    order = np.lexsort((key, labels))  # by cluster, then nearest (or a random rank) first
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")  # first position of each one's cluster
    return np.sort(order[np.arange(len(order)) - starts < size])


def resampling_kmeans(source: VectorSource, k: int, steps: int = 0, size: int = 1, seed: int = 0,
                      strategy: str = "closest", niter: int = 20, max_points_per_centroid: int = 256,
                      progress: bool = False) -> Level:
    """One level: spherical k-means on the rows (k-means++ seeded), then `steps` resampling steps."""
    rng = np.random.default_rng(seed)
    k = max(1, min(k, source.count))
    budget = k * max_points_per_centroid
    size = min(size, max_points_per_centroid)  # the union fits Faiss's training set: no uniform subsampling

    def fit(ids: np.ndarray | None, step: int) -> np.ndarray:
        n = source.count if ids is None else len(ids)
        if n > budget:  # Faiss would subsample as well: do it before the rows become float32
            pick = np.sort(rng.choice(n, budget, replace=False))
            ids = pick if ids is None else ids[pick]
        elif ids is None:
            ids = np.arange(n)
        centroids, _ = kmeans(source.take(ids), k, seed=seed + step, niter=niter,
                              max_points_per_centroid=max_points_per_centroid)
        return centroids

    t0 = time.perf_counter()
    centroids = fit(None, 0)
    labels, sims = assign_all(source, centroids, progress, f"assign k={k}")
    for step in range(1, steps + 1):
        kept = resample(labels, sims, size, strategy, rng)
        centroids = fit(kept, step)
        labels, sims = assign_all(source, centroids, progress, f"resample {step}/{steps} k={k}")
        log.info("k-means k=%d on %d rows: resampling step %d/%d (k-means on %d kept rows, %s per cluster) done "
                 "after %.1f s", k, source.count, step, steps, len(kept), strategy, time.perf_counter() - t0)
    return Level(np.ascontiguousarray(centroids, dtype=np.float32), labels, sims)


def hierarchical_kmeans(source: VectorSource | np.ndarray, plan: HierarchyPlan, seed: int = 0,
                        strategy: str = "closest", progress: bool = False) -> list[Level]:
    """Every level of `plan`, finest first; level l + 1 clusters the centroids of level l."""
    levels: list[Level] = []
    items = ArraySource(source) if isinstance(source, np.ndarray) else source
    for i, (k, steps, size) in enumerate(zip(plan.ks, plan.steps, plan.sizes)):
        ppc = POOL_POINTS_PER_CENTROID if i == 0 else 256
        level = resampling_kmeans(items, k, steps, size, seed=seed + 1000 * i, strategy=strategy,
                                  max_points_per_centroid=ppc, progress=progress)
        log.info("hierarchical k-means level %d: %d items -> %d clusters (%d non-empty), %d resampling steps "
                 "of %d per cluster", i + 1, items.count, level.k, len(np.unique(level.labels)), steps, size)
        levels.append(level)
        items = ArraySource(level.centroids)
    return levels


def cluster_sizes(levels: list[Level]) -> list[np.ndarray]:
    """Pool items under each cluster of every level, finest first."""
    sizes = [np.bincount(levels[0].labels, minlength=levels[0].k)]
    for level in levels[1:]:
        sizes.append(np.bincount(level.labels, weights=sizes[-1], minlength=level.k).astype(np.int64))
    return sizes
