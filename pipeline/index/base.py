"""The pieces of building a Faiss index: the factory ladder, training sample and seeds, search parameters, the folder.

Shared by the one-process build (build.py) and the build in parallel parts (parts.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from pipeline.io.files import atomic_write, write_parquet_atomic
from pipeline.layout import IDS, INDEX_FILE, write_index_record
from pipeline.roots.features import FeatureSet, feature_columns, iter_batches, read_meta, to_matrix

FLAT_MAX = 100_000
MAX_LISTS = 65536


def choose_factory(n: int, dim: int, budget_bytes: float) -> str:
    """autofaiss's ladder: Flat below ~100k; IVF-Flat while raw vectors fit; IVF-SQ8 (¼ the memory, recall
    close to Flat) while that fits; 4-bit fast-scan IVF-PQ beyond (trains in minutes on a CPU, not hours)."""
    raw = n * dim * 4
    if n <= FLAT_MAX and raw <= budget_bytes:
        return "Flat"
    nlist = ivf_lists(n)
    if raw * 1.1 <= budget_bytes:
        return f"IVF{nlist},Flat"
    if raw / 4 * 1.1 <= budget_bytes:
        return f"IVF{nlist},SQ8"
    m = _pq_subquantizers(dim, 2 * budget_bytes / max(n, 1))  # x4: m sub-quantizers take m/2 bytes
    return f"IVF{nlist},PQ{m}x4fs"


def ivf_lists(n: int) -> int:
    """≈ 4√N (at most 65,536), at least 1, and ≥ 39 training points per list. The coarse quantizer is searched by
    brute force for every vector added and every query: past a few √N lists its cost outgrows the lists' scan."""
    return max(1, min(int(4 * math.sqrt(n)), MAX_LISTS, n // 39 or 1))


def _pq_subquantizers(dim: int, bytes_per_vector: float) -> int:
    choices = [m for m in (dim // 2, 128, 96, 64, 48, 32, 24, 16, 8) if m and dim % m == 0 and m % 2 == 0]
    for m in choices:
        if m * 1.2 <= bytes_per_vector:
            return m
    return choices[-1] if choices else 8


def default_nprobe(index: faiss.Index) -> int | None:
    top = faiss.downcast_index(index)
    ivf = ivf_of(top.base_index if isinstance(top, faiss.IndexRefine) else index)
    if ivf is None:
        return None
    return int(min(ivf.nlist, max(16, ivf.nlist // 64)))  # ~1.5 % of the lists: near-copies share cells


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The inverted-file part of an index (through refine/pre-transform wrappers), or None."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def set_search_params(index: faiss.Index, nprobe: int | None, ef_search: int, k_factor: int = 32) -> None:
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexRefine):
        top.k_factor = k_factor
        index = top.base_index
    ivf = ivf_of(index)
    if ivf is not None and nprobe:
        ivf.nprobe = nprobe
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = ef_search


def sample_for_training(fs: FeatureSet, feature: str, size: int, seed: int, batch_rows: int) -> np.ndarray:
    """A seeded uniform sample of rows (one streaming pass; only the sample is held)."""
    n = fs.count
    if size >= n:
        chosen = np.arange(n)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    out = np.empty((len(chosen), fs.dim(feature)), np.float32)
    start, filled = 0, 0
    for batch in iter_batches(fs, feature_columns(feature), batch_rows):
        end = start + batch.num_rows
        lo, hi = np.searchsorted(chosen, [start, end])
        if hi > lo:
            out[filled:filled + hi - lo] = to_matrix(batch, feature)[chosen[lo:hi] - start]
            filled += hi - lo
        start = end
    return out


def seed_clustering(index: faiss.Index, seed: int) -> None:
    """Seeded, 10-iteration k-means for the coarse quantizer (Faiss's 25 buy little recall for the time)."""
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = seed
        ivf.cp.niter = 10
        ivf.cp.min_points_per_centroid = 1  # no stderr warning from Faiss on small samples (logged by us)
    pq = getattr(faiss.downcast_index(ivf) if ivf is not None else None, "pq", None)
    if pq is not None:
        pq.cp.seed = seed
        pq.cp.min_points_per_centroid = 1


def write_index(out: Path, index: faiss.Index, fs: FeatureSet, record: dict) -> None:
    """`index.faiss`, `ids.parquet` (id → key, shard, index), then `index.json` last (it marks the index whole)."""
    atomic_write(out / INDEX_FILE, lambda tmp: faiss.write_index(index, tmp))
    meta = read_meta(fs, ("key", "shard", "index"))
    write_parquet_atomic(meta.select(["id", "key", "shard", "index"]), out / IDS)
    write_index_record(out, record)
