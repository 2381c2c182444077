"""New images against a collection already deduplicated: each new image kept or a duplicate of an old or new one.

The old collection is never regrouped nor removed from: new images are grouped with each other (every kind of
evidence, as `run_dedup`) and linked to old ones (exact sha1, orientation-aware pHash, and the embedding
searched in the old collection's index). A new image whose group touches the old collection is a duplicate of
the old image most similar to it in that group; a group of new images only keeps one, as `run_dedup`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.edges import EMBEDDING, EXACT, KIND_ORDER, PHASH, hamming_matches, pair_similarities
from pipeline.dedup.found import self_edges
from pipeline.dedup.groups import choose_keepers, components
from pipeline.dedup.keeper import choose, source_reader
from pipeline.dedup.results import AgainstResult
from pipeline.index.build import IndexConfig, find_or_build_index
from pipeline.io.files import write_parquet_atomic
from pipeline.layout import INDEX_DIR, SUMMARY, OutputRoot, write_summary
from pipeline.roots.features import check_same_provenance, open_features, read_matrix, read_meta, shown_similarity

log = logging.getLogger(__name__)

AGAINST_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()), ("id", pa.int64()),
    ("keep", pa.bool_()), ("duplicate_of", pa.string()), ("duplicate_in", pa.string()),
    ("similarity", pa.float32()), ("reason", pa.string()), ("keep_reason", pa.string()),
])
NAMES = {KIND_ORDER[EXACT]: EXACT, KIND_ORDER[PHASH]: PHASH, KIND_ORDER[EMBEDDING]: EMBEDDING}


def run_dedup_against(cfg: DedupConfig) -> AgainstResult:
    """Write `dedup/against.parquet` (one row per new image) and `dedup/summary.json` in the new root; returns the
    counts, paths and summary record. Cost: the new images' own dedup, plus their search in the old collection
    (its index is built once and reused), a pHash range search of new against old hashes, and a hash lookup per
    new image."""
    t0 = time.perf_counter()
    new, old = open_features(cfg.features, cfg.keys), open_features(cfg.against)
    check_same_provenance(new, old)
    out = Path(cfg.out or OutputRoot.for_features(cfg.features).dedup_dir)
    meta = read_meta(new, ("key", "shard", "index", "width", "height", "sha1", "phash"))
    n = new.count
    keys = meta.column("key").to_pylist()
    vectors = read_matrix(new, cfg.feature, dtype=np.float16)
    found = self_edges(new, meta, vectors, cfg, out)
    old_vectors = read_matrix(old, cfg.feature, dtype=np.float16)  # read once: candidates and similarities

    old_meta = read_meta(old, ("key", "sha1", "phash"))
    old_keys = old_meta.column("key").to_pylist()
    cross_src, cross_dst, cross_kind, cross_stages = [], [], [], {}
    first_old: dict[bytes, int] = {}
    for j, h in enumerate(old_meta.column("sha1").to_pylist()):
        first_old.setdefault(h, j)
    pairs = [(i, first_old[h]) for i, h in enumerate(meta.column("sha1").to_pylist()) if h in first_old]
    _add(cross_src, cross_dst, cross_kind, pairs, EXACT)
    cross_stages[EXACT] = len(pairs)
    rows, hits = hamming_matches(old_meta.column("phash").to_numpy(), [found.hashes, *found.variants],
                                 cfg.phash_distance)
    pairs = sorted(set(zip(rows.tolist(), hits.tolist())))
    if found.use_embedding and pairs and cfg.phash_min_cosine > -1:  # as among the new images (found.self_edges)
        new_rows, old_rows = np.asarray(pairs, np.int64).T
        sims = pair_similarities(vectors, new_rows, old_rows, old_vectors)
        pairs = [p for p, ok in zip(pairs, sims >= cfg.phash_min_cosine) if ok]
    _add(cross_src, cross_dst, cross_kind, pairs, PHASH)
    cross_stages[PHASH] = len(pairs)
    if found.use_embedding:
        pairs = _embedding_pairs(old, old_vectors, vectors, cfg, out)
        _add(cross_src, cross_dst, cross_kind, pairs, EMBEDDING)
        cross_stages[EMBEDDING] = len(pairs)

    # nodes: new rows 0..n-1, then the old rows that some new row links to
    src, dst, kind = found.edges.arrays()
    c_src, c_dst = np.asarray(cross_src, np.int64), np.asarray(cross_dst, np.int64)
    old_nodes, old_node = np.unique(c_dst, return_inverse=True)
    all_src = np.concatenate([src, c_src])
    all_dst = np.concatenate([dst, n + old_node.astype(np.int64)])
    component, sizes = components(n + len(old_nodes), all_src, all_dst)
    kinds = np.concatenate([kind, np.asarray(cross_kind, np.int8)])
    strongest = np.full(n + len(old_nodes), 99, np.int8)
    if len(all_src):
        np.minimum.at(strongest, np.concatenate([all_src, all_dst]), np.concatenate([kinds, kinds]))

    node_vectors = old_vectors[old_nodes].astype(np.float32)
    touches_old = np.zeros(component.max() + 1 if len(component) else 0, bool)
    touches_old[component[n:]] = True
    pixels = meta.column("width").to_numpy().astype(np.int64) * meta.column("height").to_numpy()
    if cfg.keep == "quality":  # the copy a person would keep among new images (dedup/keeper.py)
        keep_new, why, _ = choose(component[:n], sizes, pixels, keys, meta.column("shard").to_pylist(),
                                  meta.column("index").to_numpy(), meta.column("sha1").to_pylist(),
                                  source_reader(new.root, cfg.progress) if not new.external else None)
    else:
        keep_new, why = choose_keepers(component[:n], pixels, keys), ["most pixels"] * n
    keeper_of = {int(component[i]): i for i in np.flatnonzero(keep_new)}
    old_in: dict[int, list[int]] = {}
    for x, c in enumerate(component[n:]):
        old_in.setdefault(int(c), []).append(x)

    keep = np.ones(n, bool)
    duplicate_of: list[str | None] = [None] * n
    duplicate_in: list[str | None] = [None] * n
    similarity = np.full(n, np.nan, np.float32)
    reason = np.array(["unique"] * n, dtype=object)
    keep_reason: list[str | None] = [None] * n
    v = vectors.astype(np.float32)
    for i in range(n):
        c = int(component[i])
        if touches_old[c]:
            cands = old_in[c]
            sims = node_vectors[cands] @ v[i]
            best = int(np.argmax(sims))
            keep[i], duplicate_of[i], duplicate_in[i] = False, old_keys[old_nodes[cands[best]]], "old"
            similarity[i], reason[i] = sims[best], NAMES.get(int(strongest[i]), EXACT)
        elif sizes[c] > 1:
            k = keeper_of[c]
            if k == i:
                reason[i], keep_reason[i] = "keep", why[i]
            else:
                keep[i], duplicate_of[i], duplicate_in[i] = False, keys[k], "new"
                similarity[i], reason[i] = float(v[k] @ v[i]), NAMES.get(int(strongest[i]), EXACT)

    table = pa.table({
        "key": keys, "shard": meta.column("shard"), "index": meta.column("index"), "id": np.arange(n),
        "keep": keep, "duplicate_of": duplicate_of, "duplicate_in": duplicate_in,
        "similarity": pa.array(shown_similarity(similarity), pa.float32(), mask=np.isnan(similarity)),
        "reason": reason.astype(str),
        "keep_reason": keep_reason,
    }, schema=AGAINST_SCHEMA)
    write_parquet_atomic(table, out / "against.parquet")
    values, counts = np.unique(reason.astype(str), return_counts=True)
    summary = {
        "images": n, "against": str(Path(cfg.against).resolve()), "collection": old.count,
        "kept": int(keep.sum()), "duplicates_of_old": int(sum(d == "old" for d in duplicate_in)),
        "duplicates_of_new": int(sum(d == "new" for d in duplicate_in)),
        "reasons": {str(a): int(b) for a, b in zip(values, counts)},
        "stages": {"new": found.stages, "against_old": cross_stages}, "feature": cfg.feature,
        "weights": new.provenance.get("weights"), "model": new.provenance.get("model"), "config": asdict(cfg),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_summary(out, summary)
    return AgainstResult(n, old.count, Path(summary["against"]), summary["kept"], summary["duplicates_of_old"],
                         summary["duplicates_of_new"], summary["reasons"], out / "against.parquet",
                         out / SUMMARY, summary["seconds"], summary)


def _add(src: list, dst: list, kind: list, pairs: list[tuple[int, int]], name: str) -> None:
    for i, j in pairs:
        src.append(i)
        dst.append(j)
        kind.append(KIND_ORDER[name])


def _embedding_pairs(old, old_vectors: np.ndarray, vectors: np.ndarray, cfg: DedupConfig, out: Path
                     ) -> list[tuple[int, int]]:
    """(new row, old row) with exact cosine above the threshold among each new image's k nearest old ones
    (searched in the old collection's own index (make index, or its dedup's), else in one built once beside
    the new dedup output; the collection is never written to)."""
    loaded = find_or_build_index(old, IndexConfig(
        features=str(old.root), out=str(out / "against_index"), feature=cfg.feature, factory=cfg.factory,
        nprobe=cfg.nprobe, memory_budget_gb=cfg.memory_budget_gb, progress=cfg.progress),
        reuse=(OutputRoot(old.root).index_dir, OutputRoot(old.root).dedup_dir / INDEX_DIR))  # the collection's own
    k = min(cfg.k, old.count)
    if k < 1 or not len(vectors):
        return []
    queries = np.ascontiguousarray(vectors, dtype=np.float32)
    _, labels = loaded.index.search(queries, k)
    pairs = []
    for i in range(len(queries)):
        row = [int(x) for x in labels[i] if x >= 0]
        if not row:
            continue
        sims = old_vectors[row].astype(np.float32) @ queries[i]
        pairs += [(i, row[p]) for p in np.flatnonzero(sims > cfg.threshold)]
    return pairs

