"""export-npy: FEATURES as `emb.npy` (N×D, L2-normalised rows) + `keys.parquet`, for tools that take a plain array.

The array is filled batch by batch through a memory map (never all in RAM) under a temporary name and renamed
when complete; then `keys.parquet` (id, key, plus shard and index for an extract root), and last the provenance
sidecar `emb.provenance.json` (model, weights, feature: what every stage reading emb.npy back guards on). The
format is in docs/FORMAT.md, "Features made elsewhere".
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.curate.config import ExportNpyConfig
from pipeline.io.files import atomic_write, write_parquet_atomic
from pipeline.layout import OutputRoot, npy_export_paths
from pipeline.roots.external import file_sha256
from pipeline.roots.features import (
    FeatureSet,
    feature_columns,
    iter_batches,
    open_features,
    read_meta,
    to_matrix,
)
from pipeline.roots.npy_origin import EXPORT_KEY, sidecar_record, write_sidecar

log = logging.getLogger(__name__)

__all__ = ["EXPORT_KEY", "ExportNpyConfig", "ExportNpyResult", "run_export_npy", "write_array"]


def write_array(fs: FeatureSet, cfg: ExportNpyConfig, path: str, dim: int) -> None:
    """The normalised vectors into a .npy at `path`, one batch at a time through a memory map."""
    if fs.count == 0:
        np.save(path, np.zeros((0, dim), cfg.dtype))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=cfg.dtype, shape=(fs.count, dim))
    start = 0
    with tqdm(total=fs.count, unit="vec", disable=not cfg.progress, desc="export-npy") as bar:
        for batch in iter_batches(fs, feature_columns(cfg.feature), cfg.batch_rows):
            out[start:start + batch.num_rows] = to_matrix(batch, cfg.feature)
            start += batch.num_rows
            bar.update(batch.num_rows)
    out.flush()
    del out


@dataclass(frozen=True)
class ExportNpyResult:
    """What export-npy wrote; `record` is what keys.parquet's metadata holds, with the paths and seconds."""

    rows: int
    dim: int
    dtype: str
    feature: str
    emb: Path  # emb.npy
    keys: Path  # keys.parquet
    provenance_file: Path  # emb.provenance.json
    seconds: float
    record: dict = field(repr=False)


def run_export_npy(cfg: ExportNpyConfig) -> ExportNpyResult:
    """Write OUT/emb.npy, OUT/keys.parquet and OUT/emb.provenance.json; returns what was written."""
    t0 = time.perf_counter()
    fs = open_features(cfg.features, cfg.keys)
    dim = fs.dim(cfg.feature)
    OutputRoot(cfg.out).prepare()
    emb, keys = npy_export_paths(cfg.out)
    atomic_write(emb, lambda tmp: write_array(fs, cfg, tmp, dim))
    columns = ("key",) if fs.external else ("key", "shard", "index")
    meta = read_meta(fs, columns)
    about = {"features": str(Path(cfg.features).resolve()), "feature": cfg.feature, "dtype": cfg.dtype,
             "rows": fs.count, "dim": dim, "normalised": True, "provenance": fs.provenance, "config": asdict(cfg)}
    table = meta.select(["id", *columns]).replace_schema_metadata({EXPORT_KEY: json.dumps(about, sort_keys=True)})
    write_parquet_atomic(table, keys)
    sidecar = write_sidecar(sidecar_record(fs.provenance, emb, file_sha256(emb), fs.count, dim, cfg.dtype,
                                           cfg.feature, about["features"]), emb)
    seconds = time.perf_counter() - t0
    log.info("export-npy: %d × %d %s (%s) → %s, %s, %s in %.1f s", fs.count, dim, cfg.dtype, cfg.feature, emb,
             keys.name, sidecar.name, seconds)
    record = {**about, "emb": str(emb), "keys": str(keys), "provenance_file": str(sidecar),
              "seconds": round(seconds, 3)}
    return ExportNpyResult(fs.count, dim, cfg.dtype, cfg.feature, Path(emb), Path(keys), Path(sidecar),
                           record["seconds"], record)
