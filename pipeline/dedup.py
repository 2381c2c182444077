"""LVD-142M-style dedup: exact ∪ perceptual ∪ embedding edges → connected components → one keeper each."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.features import (FeatureSet, check_same_provenance, open_features, read_matrix, read_meta)
from pipeline.index import FLAT_MAX, IndexConfig, build_index, ivf_lists, load_index, search
from pipeline.knn import build_graph, iter_parts
from pipeline.store import write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)

# Edge kinds, strongest evidence first: a row's reason is the strongest kind among its edges.
EXACT, PHASH, EMBEDDING = "exact", "phash", "embedding"
KIND_ORDER = {EXACT: 0, PHASH: 1, EMBEDDING: 2}
GROUP_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()), ("id", pa.int64()),
    ("component", pa.int64()), ("component_size", pa.int32()), ("keep", pa.bool_()),
    ("nearest_key", pa.string()), ("nearest_similarity", pa.float32()), ("reason", pa.string()),
])


@dataclass(frozen=True)
class DedupConfig:
    features: str
    out: str | None = None  # default: <features>/dedup
    feature: str = "cls"
    threshold: float = 0.6  # LVD-142M, with SSCD copy-detection embeddings; model-dependent (see README)
    k: int = 64
    phash_distance: int = 8
    phash_exhaustive_max: int = 200_000  # above this many images, pHash checks only k-NN neighbours
    factory: str | None = None  # index for the k-NN graph; default: Flat ≤ 100k, else dedup_factory()
    nprobe: int = 32
    embedding: bool | None = None  # None: on, unless the features come from random weights
    reference: str | None = None  # extract output of the evaluation set to decontaminate against
    reference_threshold: float = 0.45
    memory_budget_gb: float = 4.0
    large_component: int = 1000  # warn when a component is larger
    progress: bool = True


@dataclass
class Edges:
    src: list[np.ndarray]
    dst: list[np.ndarray]
    kind: list[np.ndarray]

    def add(self, i: np.ndarray, j: np.ndarray, kind: str) -> None:
        self.src.append(np.asarray(i, np.int64))
        self.dst.append(np.asarray(j, np.int64))
        self.kind.append(np.full(len(i), KIND_ORDER[kind], np.int8))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.src:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8)
        return np.concatenate(self.src), np.concatenate(self.dst), np.concatenate(self.kind)


def exact_edges(sha1: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Star edges from the first row of each sha1 group to the others."""
    first: dict[bytes, int] = {}
    src, dst = [], []
    for i, h in enumerate(sha1):
        j = first.setdefault(h, i)
        if j != i:
            src.append(j)
            dst.append(i)
    return np.asarray(src, np.int64), np.asarray(dst, np.int64)


def orientation_variants(fs: FeatureSet, phash: np.ndarray, cols: set[str]) -> list[np.ndarray]:
    """Hashes of each image turned or flipped (what the feature files hold, plus their transposes)."""
    from pipeline.phash import transpose64

    stored = [read_meta(fs, (c,)).column(c).to_numpy() for c in ("phash_mirror", "phash_flip", "phash_rot180")
              if c in cols]
    return stored + [transpose64(h) for h in [phash, *stored]] if len(stored) == 3 else stored


def phash_edges(hashes: np.ndarray, distance: int, extra: list[np.ndarray] | np.ndarray | None = None,
                batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Pairs i < j whose 64-bit hashes differ in at most `distance` bits (faiss binary range search).

    Each array of `extra` (the hashes of the mirrored, flipped, turned images) is also matched against
    `hashes`, so a mirrored or rotated copy links to its original. Cost: one N×N search per array.
    """
    n = len(hashes)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = _codes(hashes)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    src, dst = [], []
    if extra is not None and not isinstance(extra, list):
        extra = [extra]
    queries = [codes] + [_codes(e) for e in (extra or [])]
    for q in queries:
        for s in range(0, n, batch):
            lims, _, labels = index.range_search(q[s:s + batch], distance + 1)  # strict: < radius
            rows = np.repeat(np.arange(s, min(s + batch, n)), np.diff(lims.astype(np.int64)))
            mask = rows != labels
            src.append(rows[mask])
            dst.append(labels[mask].astype(np.int64))
    i, j = np.concatenate(src), np.concatenate(dst)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.stack([lo, hi], 1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1]


def _codes(hashes: np.ndarray) -> np.ndarray:
    """uint64 → (N, 8) uint8, big-endian so that bit order matches the hash's."""
    return np.ascontiguousarray(np.asarray(hashes, np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8))


def complete_graph(folder: Path, fs: FeatureSet, feature: str, k: int) -> bool:
    """A finished graph of these features with these settings (e.g. made in parallel by `make knn`)."""
    meta = folder / "graph.json"
    if not meta.exists():
        return False
    state = json.loads(meta.read_text())
    if (state.get("k"), state.get("count"), state.get("feature"), state.get("fingerprint")) != (
            k, fs.count, feature, fs.provenance["fingerprint"]):
        return False
    parts = -(-fs.count // state["part_rows"])
    return len(list((folder / "_done").glob("part-*.json"))) == parts


def knn_graph(fs: FeatureSet, cfg: DedupConfig, out: Path) -> tuple[Path, str]:
    """The k-NN graph of the features (index and graph reused when they match): (graph folder, factory)."""
    for folder in (fs.root / "knn", out / "knn"):
        if complete_graph(folder, fs, cfg.feature, cfg.k):
            index_json = folder.parent / "index" / "index.json"
            factory = json.loads(index_json.read_text())["factory"] if index_json.exists() else "prebuilt graph"
            log.info("dedup: reusing the k-NN graph in %s", folder)
            return folder, factory
    index_dir = out / "index"
    if (index_dir / "index.json").exists() and json.loads((index_dir / "index.json").read_text())[
            "provenance"]["fingerprint"] == fs.provenance["fingerprint"]:
        loaded = load_index(index_dir)
        index, record = loaded.index, loaded.record
    else:
        factory = cfg.factory or dedup_factory(fs.count, fs.dim(cfg.feature))
        record = build_index(IndexConfig(features=str(fs.root), out=str(index_dir), feature=cfg.feature,
                                         factory=factory, nprobe=cfg.nprobe,
                                         memory_budget_gb=cfg.memory_budget_gb, progress=cfg.progress))
        index = load_index(index_dir).index
    return build_graph(fs, index, cfg.feature, out / "knn", k=cfg.k, progress=cfg.progress), record["factory"]


def dedup_factory(n: int, dim: int) -> str:
    """The graph only has to rank candidates (each is re-scored exactly), so past 100k vectors 4-bit
    fast-scan PQ replaces IVF-Flat: 4–8× faster to search here, same recall of near-copies (measured)."""
    if n <= FLAT_MAX:
        return "Flat"
    m = next((m for m in (dim // 8, dim // 4, dim // 2) if m and dim % m == 0 and m % 2 == 0), dim)
    return f"IVF{ivf_lists(n)},PQ{m}x4fs"


def embedding_edges(fs: FeatureSet, vectors: np.ndarray, cfg: DedupConfig, out: Path
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """k-NN graph candidates over cosine > threshold, each re-checked with the exact cosine."""
    graph, factory = knn_graph(fs, cfg, out)
    # Every candidate is re-scored with the exact cosine: approximate (PQ/SQ) scores can be far off, and
    # false edges from them would chain unrelated images into one component.
    i, j = rescored_edges(graph, vectors, cfg.threshold)
    info = {"index": factory, "candidates": int(fs.count * min(cfg.k, fs.count - 1))}
    return i, j, info


def rescored_edges(graph: Path, vectors: np.ndarray, threshold: float, chunk: int = 1 << 17
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Graph edges whose exact cosine exceeds `threshold`, computed by Faiss (each image against its own k
    candidates, in C++): 64M pairs take seconds where a NumPy gather takes minutes."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    for s in range(0, len(vectors), chunk):
        flat.add(np.ascontiguousarray(vectors[s:s + chunk], dtype=np.float32))
    src, dst = [], []
    for ids, nb, _ in iter_parts(graph):
        for s in range(0, len(ids), 16384):
            q_ids, labels = ids[s:s + 16384], nb[s:s + 16384]
            valid = labels >= 0
            labels = np.ascontiguousarray(np.where(valid, labels, q_ids[:, None]), dtype=np.int64)
            queries = np.ascontiguousarray(vectors[q_ids], dtype=np.float32)
            sims = np.empty(labels.shape, np.float32)
            flat.compute_distance_subset(len(q_ids), faiss.swig_ptr(queries), labels.shape[1],
                                         faiss.swig_ptr(sims), faiss.swig_ptr(labels))
            rows, cols = np.nonzero(valid & (sims > threshold) & (labels != q_ids[:, None]))
            src.append(q_ids[rows])
            dst.append(labels[rows, cols])
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)


def phash_candidate_edges(graph: Path, hashes: np.ndarray, variants: list[np.ndarray], distance: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """pHash pairs among k-NN graph neighbours only (any orientation within `distance` bits): O(N·k),
    one graph part at a time so the 64·N candidate pairs are never all in memory."""
    h = np.asarray(hashes, np.uint64)
    all_hashes = [h] + [np.asarray(v, np.uint64) for v in variants]
    lo_parts, hi_parts = [], []
    for ids, nb, _ in iter_parts(graph):
        rows, cols = np.nonzero(nb >= 0)
        i, j = ids[rows], nb[rows, cols]
        close = np.zeros(len(i), bool)
        for v in all_hashes:
            for a, b in ((i, j), (j, i)):
                close |= np.bitwise_count(v[a] ^ h[b]) <= distance
        lo_parts.append(np.minimum(i[close], j[close]))
        hi_parts.append(np.maximum(i[close], j[close]))
    lo = np.concatenate(lo_parts) if lo_parts else np.zeros(0, np.int64)
    hi = np.concatenate(hi_parts) if hi_parts else np.zeros(0, np.int64)
    pairs = np.unique(np.stack([lo, hi], 1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1]



def exact_cosine(vectors: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    out = np.empty(len(i), np.float32)
    for s in range(0, len(i), chunk):
        a = vectors[i[s:s + chunk]].astype(np.float32)
        b = vectors[j[s:s + chunk]].astype(np.float32)
        out[s:s + chunk] = (a * b).sum(1)
    return out


def contaminated_ids(pool: FeatureSet, pool_vectors: np.ndarray, pool_sha1: list[bytes], reference: str,
                     cfg: DedupConfig) -> np.ndarray:
    """Pool ids within `reference_threshold` cosine of any reference image (or byte-identical to one)."""
    ref = open_features(reference)
    check_same_provenance(pool, ref)
    ref_vectors = read_matrix(ref, cfg.feature)
    index = faiss.IndexFlatIP(pool_vectors.shape[1])
    touched: set[int] = set()
    for s in range(0, len(pool_vectors), 65536):
        index.reset()
        index.add(np.ascontiguousarray(pool_vectors[s:s + 65536], dtype=np.float32))
        _, _, labels = index.range_search(ref_vectors, cfg.reference_threshold)
        touched.update((labels + s).tolist())
    ref_sha1 = set(read_meta(ref, ("sha1",)).column("sha1").to_pylist())
    touched.update(i for i, h in enumerate(pool_sha1) if h in ref_sha1)
    return np.asarray(sorted(touched), np.int64)


def run_dedup(cfg: DedupConfig) -> dict:
    """Write `dedup/groups.parquet` and `dedup/summary.json`; returns the summary."""
    t0 = time.perf_counter()
    fs = open_features(cfg.features)
    out = Path(cfg.out or Path(cfg.features) / "dedup")
    meta = read_meta(fs, ("key", "shard", "index", "width", "height", "sha1", "phash"))
    cols = set(fs.columns())
    n = fs.count
    keys = meta.column("key").to_pylist()
    sha1 = meta.column("sha1").to_pylist()
    vectors = read_matrix(fs, cfg.feature, dtype=np.float16)
    edges = Edges([], [], [])
    stages: dict[str, dict] = {}

    i, j = exact_edges(sha1)
    edges.add(i, j, EXACT)
    stages[EXACT] = {"edges": int(len(i))}
    hashes = meta.column("phash").to_numpy()
    variants = orientation_variants(fs, hashes, cols)
    if n <= cfg.phash_exhaustive_max:
        i, j = phash_edges(hashes, cfg.phash_distance, variants)
        strategy = "all pairs"
    else:  # N² Hamming comparisons (× 8 orientations) would take hours: check k-NN neighbours only
        graph, _ = knn_graph(fs, cfg, out)
        i, j = phash_candidate_edges(graph, hashes, variants, cfg.phash_distance)
        strategy = f"the {cfg.k} nearest neighbours of each image"
    edges.add(i, j, PHASH)
    stages[PHASH] = {"edges": int(len(i)), "distance": cfg.phash_distance, "mirror_aware": len(variants) >= 1,
                     "orientations": len(variants) + 1, "compared": strategy}

    random_weights = fs.provenance.get("weights", {}).get("source") == "random"
    use_embedding = cfg.embedding if cfg.embedding is not None else not random_weights
    if use_embedding:
        i, j, info = embedding_edges(fs, vectors, cfg, out)
        edges.add(i, j, EMBEDDING)
        stages[EMBEDDING] = {"edges": int(len(i)), "threshold": cfg.threshold, "k": cfg.k, **info}
    else:
        log.warning("features come from random weights: the embedding stage is off (exact and perceptual "
                    "only); pass --embedding to force it")
        stages[EMBEDDING] = {"edges": 0, "skipped": "random weights" if random_weights else "disabled"}

    src, dst, kind = edges.arrays()
    component, sizes = components(n, src, dst)
    pixels = (meta.column("width").to_numpy().astype(np.int64) * meta.column("height").to_numpy())
    keep = choose_keepers(component, pixels, keys)
    nearest, nearest_sim, reason = nearest_and_reason(n, src, dst, kind, vectors, keep, component, sizes)

    contaminated = np.zeros(n, bool)
    if cfg.reference:
        touched = contaminated_ids(fs, vectors, sha1, cfg.reference, cfg)
        bad_components = np.unique(component[touched]) if len(touched) else np.zeros(0, np.int64)
        contaminated = np.isin(component, bad_components)
        keep = keep & ~contaminated
        reason = np.where(contaminated, "contaminated", reason)

    table = pa.table({
        "key": keys, "shard": meta.column("shard"), "index": meta.column("index"), "id": np.arange(n),
        "component": component, "component_size": sizes[component].astype(np.int32), "keep": keep,
        "nearest_key": [keys[x] if x >= 0 else None for x in nearest],
        "nearest_similarity": pa.array(np.where(nearest >= 0, nearest_sim, np.nan), pa.float32(),
                                       mask=nearest < 0),
        "reason": reason,
    }, schema=GROUP_SCHEMA)
    write_parquet_atomic(table, out / "groups.parquet")
    summary = summarize(cfg, fs, sizes, component, reason, keep, contaminated, stages, time.perf_counter() - t0)
    write_json_atomic(summary, out / "summary.json")
    return summary


def components(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (scipy), renumbered by first member so ids are stable across reruns."""
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # component numbered by its smallest member id
    component = order[inverse].astype(np.int64)
    sizes = np.bincount(component, minlength=component.max() + 1 if n else 0)
    return component, sizes


def choose_keepers(component: np.ndarray, pixels: np.ndarray, keys: list[str]) -> np.ndarray:
    """One per component: most pixels, then the smallest key (deterministic)."""
    order = sorted(range(len(keys)), key=lambda x: (component[x], -int(pixels[x]), keys[x]))
    keep = np.zeros(len(keys), bool)
    seen: set[int] = set()
    for x in order:
        if component[x] not in seen:
            seen.add(int(component[x]))
            keep[x] = True
    return keep


def nearest_and_reason(n: int, src: np.ndarray, dst: np.ndarray, kind: np.ndarray, vectors: np.ndarray,
                       keep: np.ndarray, component: np.ndarray, sizes: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: most similar linked row (cosine), and why it is grouped (its strongest edge kind)."""
    nearest = np.full(n, -1, np.int64)
    best = np.full(n, -np.inf, np.float32)
    strongest = np.full(n, 99, np.int8)
    if len(src):
        a = np.concatenate([src, dst])
        b = np.concatenate([dst, src])
        kinds = np.concatenate([kind, kind])
        sim = exact_cosine(vectors, a, b)
        order = np.lexsort((-sim, a))  # per row a, most similar first
        first = np.ones(len(order), bool)
        first[1:] = a[order][1:] != a[order][:-1]
        sel = order[first]
        nearest[a[sel]], best[a[sel]] = b[sel], sim[sel]
        np.minimum.at(strongest, a, kinds)
    names = np.array([EXACT, PHASH, EMBEDDING, "unique"], dtype=object)
    reason = names[np.where(strongest == 99, 3, strongest)]
    grouped = sizes[component] > 1
    reason = np.where(grouped & keep, "keep", reason)
    reason = np.where(~grouped, "unique", reason)
    return nearest, best, reason.astype(str)


def summarize(cfg: DedupConfig, fs: FeatureSet, sizes: np.ndarray, component: np.ndarray, reason: np.ndarray,
              keep: np.ndarray, contaminated: np.ndarray, stages: dict, seconds: float) -> dict:
    values, counts = np.unique(reason, return_counts=True)
    hist_sizes, hist_counts = np.unique(sizes, return_counts=True)
    largest = int(sizes.max()) if len(sizes) else 0
    summary = {
        "images": int(fs.count), "kept": int(keep.sum()), "removed": int((~keep).sum()),
        "duplicates_removed": int(((~keep) & ~contaminated).sum()),
        "contaminated_removed": int(contaminated.sum()),
        "groups": int((sizes > 1).sum()), "largest_component": largest,
        "reasons": {str(v): int(c) for v, c in zip(values, counts)},
        "component_sizes": {str(int(s)): int(c) for s, c in zip(hist_sizes, hist_counts)},
        "stages": stages, "feature": cfg.feature, "weights": fs.provenance.get("weights"),
        "model": fs.provenance.get("model"), "config": asdict(cfg), "seconds": round(seconds, 3),
    }
    if largest > max(cfg.large_component, 0.01 * fs.count) and largest > 2:
        summary["warning"] = (f"one component holds {largest} images: the threshold ({cfg.threshold}) may be "
                              f"too low for this model, chaining unrelated images; inspect it before deleting")
        log.warning(summary["warning"])
    return summary


def write_duplicates_csv(groups: str | Path, folder: str | Path, out: str | Path) -> int:
    """`duplicates.csv`: each duplicate file → the file kept in its group (paths under `folder`); never
    touches the files themselves. Returns the number of rows."""
    import csv

    import pyarrow.parquet as pq

    table = pq.read_table(groups).to_pylist()
    keeper = {r["component"]: r["key"] for r in table if r["keep"]}
    rows = [r for r in table if not r["keep"] and r["component"] in keeper]
    rows.sort(key=lambda r: (keeper[r["component"]], r["key"]))
    folder = Path(folder)
    tmp = Path(out).with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["duplicate", "kept", "reason", "nearest_similarity", "group_size"])
        for r in rows:
            w.writerow([str(folder / r["key"]), str(folder / keeper[r["component"]]), r["reason"],
                        f"{r['nearest_similarity']:.4f}" if r["nearest_similarity"] is not None else "",
                        r["component_size"]])
    tmp.replace(out)
    return len(rows)
