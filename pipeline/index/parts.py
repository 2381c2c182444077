"""IVF indexes at scale: train once on a sample, add id ranges in parallel (processes or Ray), merge lists."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from pipeline.errors import ConfigError
from pipeline.index.base import (
    choose_factory,
    default_nprobe,
    ivf_of,
    sample_for_training,
    seed_clustering,
    set_search_params,
    write_index,
)
from pipeline.io.files import atomic_write
from pipeline.layout import OutputRoot
from pipeline.roots.features import feature_columns, file_subset, iter_batches, open_features, to_matrix
from pipeline.tasks import run_tasks

if TYPE_CHECKING:  # annotations only: build.py runs this module's build_index_parts
    from pipeline.index.build import IndexConfig

log = logging.getLogger(__name__)


def train_index(cfg: IndexConfig) -> tuple[faiss.Index, str]:
    fs = open_features(cfg.features, cfg.keys)
    dim = fs.dim(cfg.feature)
    factory = cfg.factory or choose_factory(fs.count, dim, cfg.memory_budget_gb * 2**30)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if ivf_of(index) is None:
        raise ConfigError(f"{factory} is not an IVF index: parallel parts need inverted lists to merge "
                         f"(use build_index for Flat/HNSW)")
    seed_clustering(index, cfg.seed)
    size = min(fs.count, cfg.train_size, 64 * ivf_of(index).nlist)
    index.train(sample_for_training(fs, cfg.feature, size, cfg.seed, cfg.batch_rows))
    return index, factory


def add_part(trained_path: str, cfg: IndexConfig, files: list[int], first_id: int, out_path: str) -> int:
    """Add the vectors of feature files `files` (ids from `first_id`) to a copy of the trained index."""
    faiss.omp_set_num_threads(1)
    fs = open_features(cfg.features, cfg.keys)
    index = faiss.read_index(trained_path)
    next_id = first_id
    for batch in iter_batches(file_subset(fs, files), feature_columns(cfg.feature), cfg.batch_rows):
        x = to_matrix(batch, cfg.feature)
        index.add_with_ids(x, np.arange(next_id, next_id + len(x), dtype=np.int64))
        next_id += len(x)
    atomic_write(out_path, lambda tmp: faiss.write_index(index, tmp))
    return next_id - first_id


def build_index_parts(cfg: IndexConfig, parts: int = 4, executor: str = "local") -> dict:
    """Same files as `build_index`; the add step runs as `parts` parallel jobs whose lists are merged."""
    t0 = time.perf_counter()
    fs = open_features(cfg.features, cfg.keys)
    out = Path(cfg.out or OutputRoot.for_features(cfg.features).index_dir)
    work = out / "parts"
    work.mkdir(parents=True, exist_ok=True)
    index, factory = train_index(cfg)
    trained = str(work / "trained.faiss")
    faiss.write_index(index, trained)
    groups = [list(g) for g in np.array_split(np.arange(len(fs.files)), min(parts, len(fs.files))) if len(g)]
    starts = np.cumsum([0] + [sum(fs.rows[i] for i in g) for g in groups])[:-1]
    jobs = [(trained, cfg, [int(i) for i in g], int(s), str(work / f"part-{p:04d}.faiss"))
            for p, (g, s) in enumerate(zip(groups, starts))]
    counts = run_tasks(add_part, jobs, workers=parts, executor=executor)
    merged = faiss.read_index(trained)
    ivf = ivf_of(merged)
    for job in jobs:  # in id order: the inverted lists come out as a single-process build makes them
        part = faiss.read_index(job[4])  # keep the owner alive: ivf_of(part) is a view into it
        ivf.merge_from(ivf_of(part), 0)
        del part
    merged.ntotal = ivf.ntotal
    nprobe = cfg.nprobe or default_nprobe(merged)
    set_search_params(merged, nprobe, cfg.ef_search, cfg.k_factor)
    record = {"factory": factory, "index_type": type(faiss.downcast_index(merged)).__name__,
              "count": int(merged.ntotal),
              "dim": fs.dim(cfg.feature), "feature": cfg.feature, "nprobe": nprobe, "ef_search": cfg.ef_search,
              "k_factor": cfg.k_factor, "parts": len(jobs), "part_counts": counts, "executor": executor,
              "build_seconds": round(time.perf_counter() - t0, 3), "features": str(Path(cfg.features).resolve()),
              "metric": "inner_product (cosine on L2-normalised vectors)", "provenance": fs.provenance,
              "config": asdict(replace(cfg))}
    if merged.ntotal != fs.count:
        raise RuntimeError(f"merged index holds {merged.ntotal} vectors, the features {fs.count}")
    write_index(out, merged, fs, record)
    for job in jobs:
        Path(job[4]).unlink()
    Path(trained).unlink()
    log.info("index: %s in %d parallel parts (%s), %d vectors in %.1f s", factory, len(jobs), executor,
             merged.ntotal, record["build_seconds"])
    return record
