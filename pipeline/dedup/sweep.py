"""Threshold sweep (a dry run): what each embedding threshold would remove, from one k-NN graph."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.edges import EMBEDDING, KIND_ORDER
from pipeline.dedup.found import self_edges
from pipeline.dedup.groups import components
from pipeline.dedup.results import SweepResult
from pipeline.errors import ConfigError
from pipeline.io.files import write_parquet_atomic
from pipeline.layout import OutputRoot
from pipeline.provenance import is_random
from pipeline.roots.features import open_features, read_matrix, read_meta

log = logging.getLogger(__name__)

SWEEP_SCHEMA = pa.schema([
    ("threshold", pa.float64()), ("removed", pa.int64()), ("share", pa.float64()), ("groups", pa.int64()),
    ("largest_group", pa.int64()),
])
SWEEP_FILE = "sweep.parquet"
METADATA_KEY = b"dinocurate.sweep"  # the run's context (JSON) in sweep.parquet's schema metadata


def pair_cosines(vectors: np.ndarray, src: np.ndarray, dst: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Cosine of each (src, dst) pair, computed as `edges.rescored_edges` scores the graph (Faiss's per-pair
    inner product on the float32 values, the query = src), so a cosine compares with a threshold exactly as
    a separate run's would: the kernel's result for a pair does not depend on the other pairs of the call."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    for s in range(0, len(vectors), 1 << 17):
        flat.add(np.ascontiguousarray(vectors[s:s + (1 << 17)], dtype=np.float32))
    sims = np.empty(len(src), np.float32)
    for s in range(0, len(src), chunk):
        queries = np.ascontiguousarray(vectors[src[s:s + chunk]], dtype=np.float32)
        labels = np.ascontiguousarray(dst[s:s + chunk, None], dtype=np.int64)
        out = np.empty(labels.shape, np.float32)
        flat.compute_distance_subset(len(labels), faiss.swig_ptr(queries), 1, faiss.swig_ptr(out),
                                     faiss.swig_ptr(labels))
        sims[s:s + chunk] = out[:, 0]
    return sims


def sweep_counts(n: int, src: np.ndarray, dst: np.ndarray, kind: np.ndarray, sims: np.ndarray,
                 thresholds: tuple[float, ...]) -> list[dict]:
    """Per threshold t: components over the exact and pHash edges plus the embedding edges with cosine > t
    (`sims`, NaN for the other kinds); removed = rows in groups − groups (one kept each) = n − components."""
    embedding = kind == KIND_ORDER[EMBEDDING]
    rows = []
    for t in thresholds:
        use = ~embedding | (sims > t)
        _, sizes = components(n, src[use], dst[use])
        grouped = sizes[sizes > 1]
        removed = int(n - len(sizes))
        rows.append({"threshold": float(t), "removed": removed, "share": removed / n if n else 0.0,
                     "groups": int(len(grouped)), "largest_group": int(sizes.max()) if n else 0})
    return rows


def random_sweep_error() -> ConfigError:
    return ConfigError("--sweep varies the embedding threshold, but these features come from random weights (their "
                       "cosines mean nothing, the embedding stage is off): pass --embedding to force it")


def run_sweep(cfg: DedupConfig) -> SweepResult:
    """Dry run: the k-NN graph searched once, at the sweep's lowest threshold, its edges' exact cosines kept;
    for each threshold, what a separate run with the same k would remove. Writes `dedup/sweep.parquet` only
    (groups.parquet and summary.json of an earlier run are left as they are); returns the sweep's rows, path
    and record."""
    t0 = time.perf_counter()
    thresholds = tuple(sorted(set(cfg.sweep), reverse=True))
    if not thresholds:
        raise ConfigError("--sweep needs at least one threshold, e.g. 0.95,0.9,0.85")
    fs = open_features(cfg.features, cfg.keys)  # the inputs as run_dedup opens them
    if cfg.embedding is None and is_random(fs.provenance):  # before any edge is searched (or said to be off)
        raise random_sweep_error()
    out = Path(cfg.out or OutputRoot.for_features(cfg.features).dedup_dir)
    meta = read_meta(fs, ("key", "sha1", "phash"), absent="null")
    vectors = read_matrix(fs, cfg.feature, dtype=np.float16)  # as run_dedup reads them: the same cosines
    found = self_edges(fs, meta, vectors, replace(cfg, threshold=min(thresholds)), out)
    if not found.use_embedding:
        raise random_sweep_error()
    src, dst, kind = found.edges.arrays()
    sims = np.full(len(src), np.nan, np.float32)
    embedding = kind == KIND_ORDER[EMBEDDING]
    sims[embedding] = pair_cosines(vectors, src[embedding], dst[embedding])
    rows = sweep_counts(fs.count, src, dst, kind, sims, thresholds)
    record = {"images": int(fs.count), "k": cfg.k, "feature": cfg.feature, "dry_run": True,
              "stages": found.stages, "sweep": rows, "weights": fs.provenance.get("weights"),
              "model": fs.provenance.get("model"), "config": asdict(cfg),
              "seconds": round(time.perf_counter() - t0, 3)}
    table = pa.Table.from_pylist(rows, schema=SWEEP_SCHEMA).replace_schema_metadata(
        {METADATA_KEY: json.dumps(record, sort_keys=True, default=str).encode()})
    write_parquet_atomic(table, out / SWEEP_FILE)
    record["path"] = str(out / SWEEP_FILE)
    log.info("dedup sweep over %d images, k=%d: %d thresholds in %s", fs.count, cfg.k, len(rows), record["path"])
    return SweepResult(int(fs.count), cfg.k, rows, found.stages, out / SWEEP_FILE, record["seconds"], record)


def format_sweep(rows: list[dict]) -> str:
    """The sweep as a text table: threshold, removed, share of the pool, groups, largest group."""
    lines = [f"{'threshold':>9}  {'removed':>9}  {'share':>7}  {'groups':>8}  {'largest group':>13}"]
    lines += [f"{r['threshold']:>9g}  {r['removed']:>9d}  {r['share']:>7.2%}  {r['groups']:>8d}  "
              f"{r['largest_group']:>13d}" for r in rows]
    return "\n".join(lines)
