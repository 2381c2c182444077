"""Faiss index over an extract output: auto choice by size and memory, trained on a sample, added in batches."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.errors import ConfigError, ConfigMismatchError, InputError, MissingInputError
from pipeline.index.base import (
    choose_factory,
    default_nprobe,
    ivf_of,
    sample_for_training,
    seed_clustering,
    set_search_params,
    write_index,
)
from pipeline.index.config import IndexConfig
from pipeline.index.parts import build_index_parts
from pipeline.index.results import IndexResult
from pipeline.layout import IDS, INDEX_FILE, OutputRoot, read_index_record, resolve_index_dir
from pipeline.provenance import same
from pipeline.roots.features import (
    FeatureSet,
    feature_columns,
    iter_batches,
    open_features,
    to_matrix,
)

log = logging.getLogger(__name__)


def build_index(cfg: IndexConfig, fs: FeatureSet | None = None) -> dict:
    """Build, save `index.faiss`, `ids.parquet` (id → key, shard, index) and `index.json`; returns the record.
    `fs`: the features already opened (else `cfg.features` is opened)."""
    fs = fs or open_features(cfg.features, cfg.keys)
    out = Path(cfg.out or OutputRoot.for_features(cfg.features).index_dir)
    dim, n = fs.dim(cfg.feature), fs.count
    factory = cfg.factory or choose_factory(n, dim, cfg.memory_budget_gb * 2**30)
    log.info("index: %d vectors × %d (%s) → %s", n, dim, cfg.feature, factory)
    t0 = time.perf_counter()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    train_seconds = 0.0
    if not index.is_trained:
        ivf = ivf_of(index)
        size = min(n, cfg.train_size, 64 * ivf.nlist) if ivf is not None else min(n, cfg.train_size)
        sample = sample_for_training(fs, cfg.feature, size, cfg.seed, cfg.batch_rows)
        seed_clustering(index, cfg.seed)
        t = time.perf_counter()
        index.train(sample)
        train_seconds = time.perf_counter() - t
        del sample
    with tqdm(total=n, unit="vec", disable=not cfg.progress, desc="index add") as bar:
        for batch in iter_batches(fs, feature_columns(cfg.feature), cfg.batch_rows):
            index.add(to_matrix(batch, cfg.feature))
            bar.update(batch.num_rows)
    nprobe = cfg.nprobe or default_nprobe(index)
    set_search_params(index, nprobe, cfg.ef_search, cfg.k_factor)
    record = {
        "factory": factory, "index_type": type(faiss.downcast_index(index)).__name__, "count": n, "dim": dim,
        "feature": cfg.feature, "metric": "inner_product (cosine on L2-normalised vectors)", "nprobe": nprobe,
        "ef_search": cfg.ef_search, "k_factor": cfg.k_factor, "train_seconds": round(train_seconds, 3),
        "build_seconds": round(time.perf_counter() - t0, 3), "features": str(Path(cfg.features).resolve()),
        "provenance": fs.provenance, "config": asdict(cfg),
    }
    write_index(out, index, fs, record)
    log.info("index: %s with %d vectors in %.1f s → %s", factory, n, record["build_seconds"], out)
    return record


def run_index(cfg: IndexConfig) -> IndexResult:
    """Build the index in one process, or (`cfg.parts` > 1, IVF) in parallel parts, or (`cfg.update`) add new
    shards to the existing one; returns its counts and folder, `index.json` as `record`."""
    out = Path(cfg.out or OutputRoot.for_features(cfg.features).index_dir)
    if cfg.update:
        held = len((read_index_record(out) or {}).get("updates", []))
        record = update_index(cfg)
        new = record.get("updates", [])[held:]  # none when every shard was already indexed
        added, shards = sum(u["added"] for u in new), sum(len(u["shards"]) for u in new)
        seconds = sum(u["seconds"] for u in new)
    else:
        if cfg.parts > 1:
            record = build_index_parts(cfg, cfg.parts, cfg.executor)
        else:
            record = build_index(cfg)
        added = shards = None
        seconds = record["build_seconds"]
    return IndexResult(out, record["factory"], record["count"], record["dim"], record["feature"], seconds, added,
                       shards, record)


def update_index(cfg: IndexConfig) -> dict:
    """Add the vectors of the shards an existing index does not hold yet, with its trained quantiser (no
    retraining). Ids stay the §7 ids: the shards it holds must still come first in shard order, unchanged
    (new shards sort after them, as `train-000100` after `train-000099`); otherwise ids would move and the
    index is refused for update (rebuild it). Another model or preprocessing is refused too: its quantiser was
    trained on other vectors."""
    fs = open_features(cfg.features, cfg.keys)
    if fs.external:
        raise ConfigError(f"--update adds the shards extracted into a root since its index was built; {cfg.features} "
                          f"is a file made elsewhere: rebuild the index (make index without --update)")
    out = Path(cfg.out or OutputRoot.for_features(cfg.features).index_dir)
    record = read_index_record(out)
    if record is None or not (out / INDEX_FILE).exists():
        raise MissingInputError(f"no index in {out} to update: build it first (make index without --update)")
    if not same(record.get("provenance", {}), fs.provenance):
        raise ConfigMismatchError(f"the index in {out} was built from features made with other settings (model, "
                                  f"weights or preprocessing): its trained quantiser does not fit these vectors; "
                                  f"rebuild it without --update")
    if record.get("feature") != cfg.feature:
        raise ConfigError(f"the index in {out} holds {record.get('feature')!r} vectors, not {cfg.feature!r}")
    held = _held_shards(pq.read_table(out / IDS, columns=["shard"]).column("shard").to_pylist())
    files = [(f.stem, rows, i) for i, (f, rows) in enumerate(zip(fs.files, fs.rows)) if rows]
    if [(stem, rows) for stem, rows, _ in files[:len(held)]] != held:
        changed = next(((a, b) for a, b in zip(files, held) if (a[0], a[1]) != b), None)
        raise InputError(f"the index in {out} cannot be extended in place: "
                         + (f"shard {changed[0][0]} ({changed[0][1]} rows) stands where the index holds "
                            f"{changed[1][0]} ({changed[1][1]} rows)" if changed else "it holds shards that are gone")
                         + f"; ids would move (new shards must sort after the ones indexed, and a folder unit "
                           f"that gained or lost files is redone whole): {_rebuild_command(cfg)}")
    first_new = files[len(held)][2] if len(files) > len(held) else len(fs.files)
    new = replace(fs, files=fs.files[first_new:], rows=fs.rows[first_new:])
    if not new.count:
        log.info("index: %s already holds every shard (%d vectors)", out, record["count"])
        return record
    t0 = time.perf_counter()
    loaded = load_index(out)
    with tqdm(total=new.count, unit="vec", disable=not cfg.progress, desc="index update") as bar:
        for batch in iter_batches(new, feature_columns(cfg.feature), cfg.batch_rows):
            loaded.index.add(to_matrix(batch, cfg.feature))
            bar.update(batch.num_rows)
    updates = [*record.get("updates", []), {"added": new.count, "shards": [f.stem for f in new.files],
                                              "seconds": round(time.perf_counter() - t0, 3)}]
    record = {**record, "count": fs.count, "updates": updates}
    write_index(out, loaded.index, fs, record)
    log.info("index: added %d vectors of %d new shards → %d in %s", new.count, len(new.files), fs.count, out)
    return record


def _rebuild_command(cfg: IndexConfig) -> str:
    """What to run instead of an update that cannot be done."""
    out = f" ARGS='--out {cfg.out}'" if cfg.out else ""
    return f"rebuild it: make index FEATURES='{cfg.features}'{out} (without --update)"


def _held_shards(shards: list[str]) -> list[tuple[str, int]]:
    """(shard, rows) runs of an ids.parquet's shard column, in id order."""
    runs: list[tuple[str, int]] = []
    for s in shards:
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return runs


@dataclass
class LoadedIndex:
    index: faiss.Index
    ids: pa.Table  # id, key, shard, index
    record: dict


def load_index(path: str | Path) -> LoadedIndex:
    """An index folder (or the output root holding `index/`) with its ids and record, search params set."""
    path = resolve_index_dir(path)
    record = read_index_record(path)
    if record is None or not (path / INDEX_FILE).exists():
        raise MissingInputError(f"no index in {path}: build one with make index FEATURES=...")
    index = faiss.read_index(str(path / INDEX_FILE))
    set_search_params(index, record.get("nprobe"), record.get("ef_search", 128), record.get("k_factor", 32))
    return LoadedIndex(index, pq.read_table(path / IDS), record)


def matches(record: dict | None, fs: FeatureSet, feature: str) -> bool:
    """An index record built from exactly these features (same provenance, feature kind and count)."""
    return (record is not None and same(record.get("provenance", {}), fs.provenance)
            and record.get("feature") == feature and record.get("count") == fs.count)


def find_or_build_index(fs: FeatureSet, cfg: IndexConfig, reuse: tuple[str | Path, ...] = ()) -> LoadedIndex:
    """The first index among `reuse` (and `cfg.out`) built from these features, else a new one at `cfg.out`.

    The one place where dedup, curate and others decide to reuse an index: a record that names other
    features, another feature kind or another count is never reused."""
    out = Path(cfg.out or OutputRoot.for_features(fs.root).index_dir)
    for folder in (*reuse, out):
        if matches(read_index_record(folder), fs, cfg.feature):
            log.info("reusing the index in %s", folder)
            return load_index(folder)
    build_index(replace(cfg, out=str(out)), fs)
    return load_index(out)


def search(index: faiss.Index, queries: np.ndarray, k: int, batch: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) of the top-k, in query batches; ids -1 where fewer than k exist."""
    k = min(k, index.ntotal)
    sims = np.empty((len(queries), k), np.float32)
    ids = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), batch):
        sims[s:s + batch], ids[s:s + batch] = index.search(np.ascontiguousarray(queries[s:s + batch]), k)
    return sims, ids
