"""Keep policies of a duplicate component: most pixels, SemDeDup's hard/easy over k-means clusters, or random."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.dedup.config import CENTROID_POLICIES, DedupConfig
from pipeline.dedup.groups import KEEP_REASON, Keys, keep_highest
from pipeline.dedup.keeper import SignalReader, choose
from pipeline.errors import ConfigError
from pipeline.index.kmeans import assign, kmeans

log = logging.getLogger(__name__)

MAX_AUTO_CLUSTERS = 1000  # NeMo Curator's default n_clusters; k-means training grows as clusters²
TRAIN_POINTS_PER_CLUSTER = 64  # k-means trains on a seeded sample of this many rows per cluster (Faiss: ≥ 39)


def auto_clusters(n: int) -> int:
    """√N clusters, at most 1000: each cluster then holds ~√N images, far more than a duplicate group, so its
    centroid is a prototype of the neighbourhood rather than the mean of the group itself; √N of 1M is NeMo
    Curator's default of 1000 clusters (SemDeDup used 50k for LAION-440M, ~2.4·√N)."""
    return int(min(max(1, round(math.sqrt(n))), MAX_AUTO_CLUSTERS))


@dataclass
class Clusters:
    """Spherical k-means of the pool: unit centroids, each clustered row's nearest centroid and its cosine
    distance to it (rows not clustered: -1 / NaN)."""

    centroids: np.ndarray
    assignment: np.ndarray
    distance: np.ndarray


def cluster_pool(vectors: np.ndarray, k: int, seed: int = 0, rows: np.ndarray | None = None) -> Clusters:
    """k-means on a seeded sample of all of `vectors` (k·64 rows at most: the centroids), then the nearest
    centroid and cosine distance 1 − x·c of `rows` only (default: every row), in float32 batches."""
    n = len(vectors)
    k = max(1, min(k, n))
    m = min(n, k * TRAIN_POINTS_PER_CLUSTER)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    centroids, _ = kmeans(vectors[sample], k, seed=seed, max_points_per_centroid=TRAIN_POINTS_PER_CLUSTER)
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    assignment = np.full(n, -1, np.int64)
    distance = np.full(n, np.nan, np.float32)
    for s in range(0, len(rows), 65536):
        r = rows[s:s + 65536]
        x = np.asarray(vectors[r], np.float32)
        a = assign(x, centroids)
        assignment[r] = a
        distance[r] = 1 - np.einsum("ij,ij->i", x, centroids[a])
    return Clusters(centroids, assignment, distance)


def _simple_reasons(keep: np.ndarray, component: np.ndarray, sizes: np.ndarray, score: np.ndarray | None,
                    text: str) -> pa.Array:
    """`text` on each grouped keeper; with a `score`, "tie on <text>: first by name" where another member ties."""
    grouped = sizes[component] > 1 if len(keep) else np.zeros(0, bool)
    out: list[str | None] = [None] * len(keep)
    tied: set[int] = set()
    if score is not None and len(keep):
        best = {int(c): score[i] for i, c in enumerate(component) if keep[i]}
        tied = {int(c) for i, c in enumerate(component) if not keep[i] and score[i] == best[int(c)]}
    for i in np.flatnonzero(keep & grouped):
        out[i] = f"tie on {text}: first by name" if int(component[i]) in tied else text
    return pa.array(out, pa.string())


def random_scores(keys: Keys, seed: int) -> np.ndarray:
    """A seeded pseudo-random 63-bit score per key: the same image wins on a rerun, even after shards are
    added (the score depends on the key and the seed, not on the row's position)."""
    salt = seed.to_bytes(8, "little", signed=True)
    return np.fromiter((int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, salt=salt).digest(), "little")
                        >> 1 for k in _strings(keys)), np.int64, len(keys))


def _strings(keys: Keys):
    """Each key as a Python string, a chunk at a time when they are an Arrow column."""
    if not isinstance(keys, (pa.Array, pa.ChunkedArray)):
        yield from keys
        return
    for s in range(0, len(keys), 65536):
        yield from keys.slice(s, 65536).to_pylist()


@dataclass
class Keepers:
    """The keeper of each component, what summary.json records about the choice, and the extra
    groups.parquet columns it produced (hard/easy: each grouped row's cluster and centroid distance)."""

    keep: np.ndarray
    info: dict
    columns: dict[str, pa.Array] = field(default_factory=dict)

    def drop_reasons(self, rows: np.ndarray) -> None:
        """No keep_reason on `rows` (keepers that a later step removed, e.g. contaminated)."""
        if KEEP_REASON in self.columns and rows.any():
            values = self.columns[KEEP_REASON].to_pylist()
            self.columns[KEEP_REASON] = pa.array([None if r else v for v, r in zip(values, rows)], pa.string())

    def add_columns(self, table: pa.Table) -> pa.Table:
        for name, column in self.columns.items():
            table = table.append_column(name, column)
        return table


def choose_by_policy(cfg: DedupConfig, component: np.ndarray, sizes: np.ndarray, pixels: np.ndarray,
                     keys: Keys, vectors: np.ndarray, use_embedding: bool, meta: pa.Table | None = None,
                     reader: SignalReader | None = None) -> Keepers:
    """One keeper per component by `cfg.keep`, with a `keep_reason` column (why each keeper won).

    quality (dedup/keeper.py) reads each grouped image through `reader` (shard, index and sha1 from `meta`);
    the other policies break ties by the smallest key.

    hard/easy follow SemDeDup (facebookresearch/SemDeDup, clustering/sort_clusters.py `rank_within_cluster`:
    `keep_hard` sorts each k-means cluster by distance to its centroid, descending, and semdedup.py keeps the
    first of each duplicate set; "easy" reverses that order) and NeMo Curator
    (nemo_curator/stages/deduplication/semantic/pairwise.py: "hard" keeps outliers farthest from the centroid,
    "easy" the representatives closest to it): hard keeps the member farthest from its own cluster's
    centroid (the most atypical view, SemDeDup's default), easy the closest (the most prototypical).
    """
    t0 = time.perf_counter()
    info: dict = {"policy": cfg.keep}
    if cfg.keep == "quality":
        n = len(keys)
        shards = meta.column("shard") if meta is not None else [""] * n
        index = meta.column("index").fill_null(-1).to_numpy() if meta is not None else np.full(n, -1)
        sha1 = meta.column("sha1") if meta is not None else [None] * n
        keep, why, counts = choose(component, sizes, pixels, keys, shards, index, sha1, reader)
        info.update(counts)
        return Keepers(keep, info, {KEEP_REASON: pa.array(why, pa.string())})
    if cfg.keep == "largest":
        keep = keep_highest(component, np.asarray(pixels, np.int64), keys)
        return Keepers(keep, info, {KEEP_REASON: _simple_reasons(keep, component, sizes, pixels, "most pixels")})
    if cfg.keep == "random":
        info["seed"] = cfg.seed
        keep = keep_highest(component, random_scores(keys, cfg.seed), keys)
        text = f"seeded random pick (--keep random, seed {cfg.seed})"
        return Keepers(keep, info, {KEEP_REASON: _simple_reasons(keep, component, sizes, None, text)})
    if cfg.keep not in CENTROID_POLICIES:
        raise ValueError(f"unknown keep policy {cfg.keep!r}")  # DedupConfig validates it: our bug
    if not use_embedding:
        raise ConfigError(f"--keep {cfg.keep} ranks images by their embedding, but these features come from "
                          "random weights (their distances mean nothing): extract with real weights, pass "
                          "--embedding to force it, or use --keep largest or random")
    grouped = np.flatnonzero(sizes[component] > 1)
    k = cfg.clusters or auto_clusters(len(keys))
    if len(grouped):
        clusters = cluster_pool(vectors, k, cfg.seed, rows=grouped)
    else:  # no group to rank: no k-means (clusters 0 in the summary)
        clusters = Clusters(np.zeros((0, vectors.shape[1]), np.float32), np.full(len(keys), -1, np.int64),
                            np.full(len(keys), np.nan, np.float32))
    # hard: the largest distance wins; easy: the smallest (NaN only on rows of size-1 components, kept anyway)
    score = np.nan_to_num(clusters.distance if cfg.keep == "hard" else -clusters.distance)
    keep = keep_highest(component, score, keys)
    info.update({"clusters": int(len(clusters.centroids)), "clusters_auto": cfg.clusters is None,
                 "seed": cfg.seed, "clustered_rows": int(len(grouped)),
                 "seconds": round(time.perf_counter() - t0, 3)})
    log.info("dedup: keep %s over %d k-means clusters (%d grouped rows) in %.1f s", cfg.keep,
             info["clusters"], len(grouped), info["seconds"])
    missing = clusters.assignment < 0
    text = ("farthest from its k-means centroid (--keep hard)" if cfg.keep == "hard"
            else "closest to its k-means centroid (--keep easy)")
    columns = {
        KEEP_REASON: _simple_reasons(keep, component, sizes, None, text),
        "cluster": pa.array(clusters.assignment.astype(np.int32), pa.int32(), mask=missing),
        "centroid_distance": pa.array(clusters.distance, pa.float32(), mask=missing),
    }
    return Keepers(keep, info, columns)
