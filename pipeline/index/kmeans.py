"""Spherical k-means on Faiss (k-means++ seeded) and nearest-centroid assignment, for curate and dedup."""

from __future__ import annotations

import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)


PLUS_PLUS_MAX_K = 8192  # k-means++ seeding up to this many clusters (beyond, Faiss's random init)
PLUS_PLUS_SAMPLE = 64  # points per cluster the seeding looks at


def kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = 20, max_points_per_centroid: int = 256
           ) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k, d) unit-norm, assignment (n,)) of spherical k-means on normalised rows.

    Seeded with k-means++ on a sample: Faiss's default random seeds put two seeds in one true cluster
    almost surely when k is small, which Lloyd's iterations never undo (a split mode and a merged pair).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    # min_points_per_centroid=1: Faiss would print its own warning to stderr below 39 points per cluster
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1)
    if len(x) < 39 * k:
        log.info("k-means: %d points for %d clusters (%.1f each; Faiss suggests 39): clusters are coarse",
                 len(x), k, len(x) / k)
    init = plus_plus_seeds(x, k, seed) if 1 < k <= PLUS_PLUS_MAX_K else None
    km.train(x, init_centroids=init)
    return km.centroids, assign(x, km.centroids)


def plus_plus_seeds(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means++ (D² sampling) on a seeded sample of at most k·64 rows; returns (k, d) float32."""
    rng = np.random.default_rng(seed)
    m = min(len(x), k * PLUS_PLUS_SAMPLE)
    sample = x[np.sort(rng.choice(len(x), m, replace=False))] if m < len(x) else x
    seeds = np.empty((k, x.shape[1]), np.float32)
    seeds[0] = sample[rng.integers(m)]
    sq = (sample * sample).sum(1)
    d2 = np.maximum(sq - 2 * sample @ seeds[0] + seeds[0] @ seeds[0], 0)
    for i in range(1, k):
        total = d2.sum()
        j = rng.choice(m, p=d2 / total) if total > 0 else rng.integers(m)
        seeds[i] = sample[j]
        d2 = np.minimum(d2, np.maximum(sq - 2 * sample @ seeds[i] + seeds[i] @ seeds[i], 0))
    return seeds


def assign(x: np.ndarray, centroids: np.ndarray, batch: int = 16384) -> np.ndarray:
    """Nearest centroid (largest inner product, fp32) of each row, in float32 batches.

    One fp32 matrix product and an argmax per batch (torch's GEMM): 3–4× the speed of Faiss's flat search on
    this kind of CPU (65,536 × 2,048 × 384: 0.6–0.75 s against 2.2–2.5 s), same answers up to exact ties."""
    import torch

    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(x[s:s + batch], dtype=np.float32))
        out[s:s + batch] = torch.mm(chunk, c.T).argmax(1).numpy()
    return out
