"""Balanced curation without seeds (--balanced): hierarchical k-means with resampling, then balanced sampling.

Memory: the pool's vectors are held once, as float16 (N·D·2 bytes), when that fits --memory-budget; otherwise
they are streamed from the feature files on every pass (one pass per k-means step of the leaf level). Either way
float32 exists only for one working set: a k-means training set (at most 64 rows per leaf cluster) or one chunk
of 65,536 rows being assigned; plus per-row cluster labels and cosines (12 bytes a row) and, while a resampling
step or the final sampling sorts them, ~40 bytes a row of indices.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from pipeline.curate.cluster import hierarchical_sample
from pipeline.curate.hkmeans import Level, cluster_sizes, hierarchical_kmeans, resolve_plan
from pipeline.curate.vectors import ArraySource, FeatureSource, VectorSource
from pipeline.roots.features import FeatureSet, read_matrix

if TYPE_CHECKING:
    from pipeline.curate.config import CurateConfig

log = logging.getLogger(__name__)


def pool_source(pool: FeatureSet, feature: str, subset: np.ndarray | None, memory_budget_gb: float
                ) -> tuple[VectorSource, str]:
    """The rows to cluster (all, or the sorted pool ids `subset`) and how they are held."""
    n = pool.count if subset is None else len(subset)
    gib = n * pool.dim(feature) * 2 / 2**30
    if gib <= memory_budget_gb:
        x = read_matrix(pool, feature, dtype=np.float16)
        return ArraySource(x if subset is None else x[subset]), f"float16 in memory ({gib:.2f} GiB)"
    log.info("balanced: %.1f GiB of float16 vectors exceed --memory-budget %.1f GiB: streaming them from %s on "
             "every pass", gib, memory_budget_gb, pool.root)
    return FeatureSource(pool, feature, subset), f"streamed from the feature files ({gib:.2f} GiB as float16)"


def top_clusters(levels: list[Level]) -> np.ndarray:
    """The top-level cluster of every pool row."""
    top = levels[0].labels
    for level in levels[1:]:
        top = level.labels[top]
    return top


def balanced_selection(pool: FeatureSet, cfg: CurateConfig, subset: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(selected positions among the clustered rows, their leaf cluster, the summary's `balanced` record)."""
    source, held = pool_source(pool, cfg.feature, subset, cfg.memory_budget_gb)
    plan = resolve_plan(source.count, cfg.levels, cfg.levels_k, cfg.resample_steps, cfg.resample_size)
    log.info("balanced: %d images, levels %s, resampling steps %s of %s per cluster, %s sampling at the leaves; "
             "vectors %s", source.count, list(plan.ks), list(plan.steps), list(plan.sizes), cfg.sampling, held)
    levels = hierarchical_kmeans(source, plan, seed=cfg.seed, progress=cfg.progress)
    chosen = hierarchical_sample(levels, cfg.balanced, cfg.sampling, seed=cfg.seed)
    top = top_clusters(levels)
    record = {"target": cfg.balanced, "selected": int(len(chosen)), "levels": list(plan.ks),
              "resample_steps": list(plan.steps), "resample_sizes": list(plan.sizes), "sampling": cfg.sampling,
              "vectors": held, "largest_leaf": int(cluster_sizes(levels)[0].max()),
              "top_cluster_sizes_pool": sorted(np.bincount(top, minlength=levels[-1].k).tolist(), reverse=True),
              "top_cluster_sizes_selected": sorted(np.bincount(top[chosen], minlength=levels[-1].k).tolist(),
                                                   reverse=True)}
    return chosen, levels[0].labels[chosen], record
