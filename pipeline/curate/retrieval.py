"""LVD-142M retrieval: grow curated seed sets with their neighbours in an uncurated pool; balanced sampling."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from pipeline.curate.balanced import balanced_selection
from pipeline.curate.config import CurateConfig
from pipeline.curate.results import CurateResult
from pipeline.errors import InputError
from pipeline.index.build import IndexConfig, find_or_build_index, search
from pipeline.index.kmeans import assign, kmeans
from pipeline.index.rows import search_within, where_mask
from pipeline.io.files import write_parquet_atomic
from pipeline.layout import INDEX_DIR, SELECTED, SUMMARY, OutputRoot, write_summary
from pipeline.provenance import is_random
from pipeline.roots.features import (
    FeatureSet,
    check_same_provenance,
    open_features,
    read_matrix,
    read_meta,
    shown_similarity,
)

log = logging.getLogger(__name__)

SELECTED_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()), ("id", pa.int64()),
    ("source", pa.string()), ("mode", pa.string()), ("query", pa.string()), ("cluster", pa.int64()),
    ("similarity", pa.float32()),
])


def parse_queries(specs: list[str]) -> tuple[tuple[str, str], ...]:
    """`name=OUT` or `OUT` (named after its folder) for each seed set."""
    out = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if part:
                name, _, root = part.rpartition("=")
                out.append((name or Path(root).name, root))
    return tuple(out)


def choose_mode(cfg: CurateConfig, n_queries: int) -> tuple[str, str]:
    """LVD-142M: sample-based retrieval for large curated sets, cluster-based for small ones."""
    if cfg.mode != "auto":
        return cfg.mode, f"--mode {cfg.mode} given"
    if n_queries >= cfg.auto_threshold:
        return "sample", f"{n_queries} queries >= {cfg.auto_threshold}: a large set, its own neighbours suffice"
    return "cluster", (f"{n_queries} queries < {cfg.auto_threshold}: a small set, so whole pool clusters it "
                       f"touches are taken (more diversity than {cfg.k} neighbours per image)")


def pool_index(pool: FeatureSet, cfg: CurateConfig, out: Path) -> faiss.Index:
    """The pool's index (reused from POOL/index when it matches), built under OUT/index otherwise."""
    return find_or_build_index(pool, IndexConfig(
        features=str(pool.root), out=str(out / INDEX_DIR), feature=cfg.feature, memory_budget_gb=cfg.memory_budget_gb,
        progress=cfg.progress), reuse=(OutputRoot.for_features(pool.root).index_dir,)).index


def sample_based(index, queries: np.ndarray, keys: list[str], k: int, min_similarity: float,
                 allowed: np.ndarray | None = None) -> dict[int, tuple[float, str]]:
    """pool id → (best similarity, query key) over every query's k nearest with similarity ≥ the minimum
    (the k nearest among the `allowed` rows when given: --where)."""
    sims, ids = search(index, queries, k) if allowed is None else search_within(index, queries, k, allowed)
    best: dict[int, tuple[float, str]] = {}
    for q in range(len(queries)):
        for i, s in zip(ids[q], sims[q]):
            if i >= 0 and s >= min_similarity and (i not in best or s > best[i][0]):
                best[int(i)] = (float(s), keys[q])
    return best


def cluster_based(centroids: np.ndarray, labels: np.ndarray, queries: np.ndarray, cfg: CurateConfig,
                  rng: np.random.Generator) -> tuple[list[tuple[int, int]], dict]:
    """(pool id, cluster) pairs: up to `per_cluster` random members of each cluster holding more than
    `min_queries` queries, clusters with most queries first, `max_per_source` in all."""
    q_labels = assign(queries, centroids)
    counts = np.bincount(q_labels, minlength=len(centroids))
    eligible = [c for c in np.argsort(-counts, kind="stable") if counts[c] > cfg.min_queries]
    chosen: list[tuple[int, int]] = []
    for c in eligible:
        members = np.flatnonzero(labels == c)
        room = cfg.max_per_source - len(chosen)
        take = min(len(members), cfg.per_cluster, room)
        if take <= 0:
            break
        picked = members if take == len(members) else rng.choice(members, take, replace=False)
        chosen.extend((int(i), int(c)) for i in np.sort(picked))
    used = sorted({c for _, c in chosen})
    return chosen, {"clusters_used": len(used), "clusters_eligible": len(eligible),
                    "queries_per_cluster": {str(int(c)): int(counts[c]) for c in np.flatnonzero(counts)}}


def run_curate(cfg: CurateConfig) -> CurateResult:
    """Write `curate/selected.parquet` (one row per selected pool image) and `curate/summary.json`; returns the
    counts, paths and summary record."""
    t0 = time.perf_counter()
    pool = open_features(cfg.pool, cfg.keys)
    if pool.count == 0:
        raise InputError(f"the pool {cfg.pool} holds no features (every image failed? see its failures/): "
                         f"nothing to curate")
    out = Path(cfg.out or OutputRoot.for_features(cfg.pool).curate_dir)
    allowed = where_mask(pool, cfg.where) if cfg.where else None  # None: every pool row may be selected
    if allowed is not None and not allowed.any():
        raise InputError(f"no pool image matches --where {cfg.where!r}: nothing could be selected")
    meta = read_meta(pool, ("key", "shard", "index"))
    vectors = read_matrix(pool, cfg.feature) if cfg.queries else None  # --balanced alone reads its own float16
    rng = np.random.default_rng(cfg.seed)
    rows: dict[int, dict] = {}
    summary: dict = {"pool": pool.count, "sources": {}, "config": asdict(cfg), "notes": []}
    if allowed is not None:
        summary["where"] = {"expression": cfg.where, "matching": int(allowed.sum())}
    pool_ids = np.flatnonzero(allowed) if allowed is not None else np.arange(pool.count)
    if is_random(pool.provenance):
        summary["notes"].append("features from random weights: neighbours and clusters mean nothing; this run "
                                "tests the pipeline, it does not curate")
    if cfg.balanced is not None and cfg.balanced >= pool.count:
        summary["notes"].append(f"--balanced {cfg.balanced} asks for at least the whole pool ({pool.count} "
                                f"images): every image is selected")
    for note in summary["notes"]:
        log.warning("curate: %s", note)
    if cfg.balanced is not None:
        chosen, leaf, summary["balanced"] = balanced_selection(pool, cfg, None if allowed is None else pool_ids)
        for i, c in zip(chosen, leaf):  # positions among pool_ids
            rows[int(pool_ids[i])] = {"source": "balanced", "mode": "balanced", "query": None, "cluster": int(c),
                                      "similarity": None}
    centroids = labels = index = None
    per_source_ids: dict[str, set[int]] = {}
    for name, root in cfg.queries:
        seeds = open_features(root)
        check_same_provenance(pool, seeds)
        if seeds.count == 0:
            raise InputError(f"seed set {name} ({root}) holds no features (every image failed?)")
        q_vectors = read_matrix(seeds, cfg.feature)
        q_keys = read_meta(seeds, ("key",)).column("key").to_pylist()
        mode, why = choose_mode(cfg, len(q_keys))
        log.info("curate %s: %d queries, %s retrieval (%s)", name, len(q_keys), mode, why)
        info: dict = {"queries": len(q_keys), "mode": mode, "why": why}
        if mode == "sample":
            index = index if index is not None else pool_index(pool, cfg, out)
            best = sample_based(index, q_vectors, q_keys, cfg.k, cfg.min_similarity, allowed)
            picked = sorted(best, key=lambda i: (-best[i][0], i))[:cfg.max_per_source]
            for i in picked:
                _offer(rows, i, {"source": name, "mode": "sample", "query": best[i][1], "cluster": None,
                                 "similarity": best[i][0]})
        else:
            if centroids is None:
                n_clusters = cfg.clusters or max(2, pool.count // 500)
                centroids, labels = kmeans(vectors, n_clusters, seed=cfg.seed)
                summary["clusters"] = int(len(centroids))
            # rows --where leaves out are in no cluster: never taken
            members = labels if allowed is None else np.where(allowed, labels, -1)
            chosen, extra = cluster_based(centroids, members, q_vectors, cfg, rng)
            info.update(extra)
            picked = [i for i, _ in chosen]
            for i, c in chosen:
                sim = float(vectors[i] @ centroids[c])
                _offer(rows, i, {"source": name, "mode": "cluster", "query": None, "cluster": c,
                                 "similarity": sim})
        per_source_ids[name] = set(picked)
        info["selected"] = len(picked)
        summary["sources"][name] = info
    for name, ids in per_source_ids.items():
        others = set().union(*(v for n, v in per_source_ids.items() if n != name)) if len(per_source_ids) > 1 \
            else set()
        summary["sources"][name]["unique"] = len(ids - others)
    ids = np.array(sorted(rows), dtype=np.int64)
    keys, shards, idx = (meta.column(c).to_pylist() for c in ("key", "shard", "index"))
    table = pa.table({
        "key": [keys[i] for i in ids], "shard": [shards[i] for i in ids], "index": [idx[i] for i in ids],
        "id": ids, **{c: [rows[int(i)][c] for i in ids] for c in ("source", "mode", "query", "cluster",
                                                                  "similarity")}}, schema=SELECTED_SCHEMA)
    write_parquet_atomic(table, out / SELECTED)
    summary.update({"selected": int(len(ids)), "seconds": round(time.perf_counter() - t0, 3),
                    "pool_root": str(Path(cfg.pool).resolve())})
    write_summary(out, summary)
    return CurateResult(pool.count, summary["selected"], summary["sources"], summary.get("balanced"),
                        out / SELECTED, out / SUMMARY, summary["seconds"], summary)


def _offer(rows: dict[int, dict], i: int, row: dict) -> None:
    """A pool image selected twice keeps the row with the higher similarity (one row per image)."""
    old = rows.get(i)
    if row["similarity"] is not None:
        row = {**row, "similarity": shown_similarity(row["similarity"])}
    if old is None or (row["similarity"] or -2) > (old["similarity"] or -2):
        rows[i] = row

