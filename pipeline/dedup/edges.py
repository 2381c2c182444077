"""Duplicate evidence as edges between rows: exact, perceptual, embedding, and copies of a reference set.

Exact is the sha1 of the bytes; perceptual the orientation-aware pHash; embedding the k-NN candidates
re-scored with the exact cosine; reference copies drive decontamination.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.config import DedupConfig
from pipeline.index.base import FLAT_MAX, ivf_lists
from pipeline.index.build import IndexConfig, find_or_build_index
from pipeline.index.knn import build_graph, complete_graph, iter_parts
from pipeline.io.freed_memory import release_freed_memory
from pipeline.io.phash import transpose64
from pipeline.layout import INDEX_DIR, KNN_DIR, OutputRoot, read_index_record
from pipeline.roots.features import NPY, FeatureSet, check_same_provenance, open_features, read_matrix, read_meta
from pipeline.roots.rows import StreamedRows

log = logging.getLogger(__name__)

# Edge kinds, strongest evidence first: a row's reason is the strongest kind among its edges.
EXACT, PHASH, EMBEDDING = "exact", "phash", "embedding"
KIND_ORDER = {EXACT: 0, PHASH: 1, EMBEDDING: 2}


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


def exact_edges(sha1: list[bytes] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Star edges from the first row of each sha1 group to the others; a row without a sha1 links to nothing.

    Arrow's hash table does the grouping: no Python object per row (10M rows would hold ~1.3 GiB of them)."""
    values = sha1 if isinstance(sha1, (pa.Array, pa.ChunkedArray)) else pa.array(sha1, pa.binary())
    if len(values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    encoded = pc.dictionary_encode(values)
    codes = (encoded.combine_chunks() if isinstance(encoded, pa.ChunkedArray) else encoded).indices
    code = codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.flatnonzero(code >= 0)
    _, first_at = np.unique(code[rows], return_index=True)
    first = np.empty(int(code.max()) + 1 if len(rows) else 0, np.int64)
    first[code[rows[first_at]]] = rows[first_at]
    head = first[code[rows]]
    later = head != rows
    return head[later], rows[later]


def orientation_variants(fs: FeatureSet, phash: np.ndarray, cols: set[str]) -> list[np.ndarray]:
    """Hashes of each image turned or flipped (what the feature files hold, plus their transposes)."""
    stored = [read_meta(fs, (c,)).column(c).to_numpy() for c in ("phash_mirror", "phash_flip", "phash_rot180")
              if c in cols]
    return stored + [transpose64(h) for h in [phash, *stored]] if len(stored) == 3 else stored


def phash_edges(hashes: np.ndarray, distance: int, extra: list[np.ndarray] | np.ndarray | None = None,
                batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Pairs i < j whose 64-bit hashes differ in at most `distance` bits (faiss binary range search).

    Each array of `extra` (the hashes of the mirrored, flipped, turned images) is also matched against
    `hashes`, so a mirrored or rotated copy links to its original. Cost: one N×N search per array.
    """
    if len(hashes) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if extra is not None and not isinstance(extra, list):
        extra = [extra]
    i, j = hamming_matches(hashes, [hashes, *(extra or [])], distance, batch)
    mask = i != j
    lo, hi = np.minimum(i[mask], j[mask]), np.maximum(i[mask], j[mask])
    pairs = np.unique(np.stack([lo, hi], 1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1]


def hamming_matches(base: np.ndarray, queries: list[np.ndarray], distance: int, batch: int = 8192
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(query row, base row) of every pair within `distance` bits, over each array of `queries` (faiss
    binary range search on the 64-bit hashes, in batches)."""
    index = faiss.IndexBinaryFlat(64)
    index.add(_codes(base))
    rows, labels = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for q in queries:
        codes = _codes(q)
        for s in range(0, len(codes), batch):
            lims, _, found = index.range_search(codes[s:s + batch], distance + 1)  # strict: < radius
            rows.append(np.repeat(np.arange(s, min(s + batch, len(codes))), np.diff(lims.astype(np.int64))))
            labels.append(found.astype(np.int64))
    return np.concatenate(rows), np.concatenate(labels)


def pair_similarities(vectors: np.ndarray | StreamedRows, i: np.ndarray, j: np.ndarray,
                      other: np.ndarray | StreamedRows | None = None, chunk: int = 1 << 16) -> np.ndarray:
    """Cosine of each pair (vectors[i[p]], other[j[p]]) of normalised vectors (`other`: `vectors` itself when None),
    held or streamed: one gather of the rows a chunk of pairs touches, so streamed vectors are read once per chunk."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    sims = np.empty(len(i), np.float32)
    for s in range(0, len(i), chunk):
        a, b = i[s:s + chunk], j[s:s + chunk]
        if other is None:  # one gather for both ends
            rows, where = np.unique(np.concatenate([a, b]), return_inverse=True)
            v = np.asarray(vectors[rows], np.float32)
            left, right = v[where[:len(a)]], v[where[len(a):]]
        else:
            left, right = np.asarray(vectors[a], np.float32), np.asarray(other[b], np.float32)
        sims[s:s + len(a)] = np.einsum("ij,ij->i", left, right)
    return sims


def confirmed_by_embedding(vectors: np.ndarray | StreamedRows, i: np.ndarray, j: np.ndarray, min_cosine: float
                           ) -> np.ndarray:
    """Which pHash pairs the embedding does not contradict: cosine at least `min_cosine` (-1: all of them)."""
    if min_cosine <= -1 or not len(i):
        return np.ones(len(i), bool)
    return pair_similarities(vectors, i, j) >= min_cosine


def _codes(hashes: np.ndarray) -> np.ndarray:
    """uint64 → (N, 8) uint8, big-endian so that bit order matches the hash's."""
    return np.ascontiguousarray(np.asarray(hashes, np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8))


def knn_graph(fs: FeatureSet, cfg: DedupConfig, out: Path) -> tuple[Path, str]:
    """The k-NN graph of the features (index and graph reused when they match): (graph folder, factory)."""
    root = OutputRoot.for_features(fs.root)
    for folder in (root.knn_dir, out / KNN_DIR):
        if complete_graph(folder, fs, cfg.feature, cfg.k):
            record = read_index_record(folder.parent / INDEX_DIR)
            log.info("dedup: reusing the k-NN graph in %s", folder)
            return folder, record["factory"] if record else "prebuilt graph"
    factory = cfg.factory or dedup_factory(fs.count, fs.dim(cfg.feature))
    loaded = find_or_build_index(fs, IndexConfig(
        features=str(fs.root), out=str(out / INDEX_DIR), feature=cfg.feature, factory=factory, nprobe=cfg.nprobe,
        memory_budget_gb=cfg.memory_budget_gb, progress=cfg.progress))
    graph = build_graph(fs, loaded.index, cfg.feature, out / KNN_DIR, k=cfg.k, progress=cfg.progress)
    return graph, loaded.record["factory"]


DEDUP_MAX_LISTS = 4096


def dedup_factory(n: int, dim: int) -> str:
    """The graph only has to rank candidates (each is re-scored exactly), so past 100k vectors 4-bit
    fast-scan PQ replaces IVF-Flat: faster to search, with the same recall of near-copies. At most 4,096
    lists: every vector is both added and searched, so the brute-force coarse quantizer runs twice per
    vector and past ~4k lists costs more than the lists it spares scanning (docs/scaling.md#plan)."""
    if n <= FLAT_MAX:
        return "Flat"
    m = next((m for m in (dim // 8, dim // 4, dim // 2) if m and dim % m == 0 and m % 2 == 0), dim)
    return f"IVF{min(ivf_lists(n), DEDUP_MAX_LISTS)},PQ{m}x4fs"


def embedding_edges(fs: FeatureSet, vectors: np.ndarray | StreamedRows, cfg: DedupConfig, out: Path,
                    records_bytes: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """k-NN graph candidates over cosine > threshold, each re-checked with the exact cosine. `records_bytes`: what
    the caller holds per row besides the vectors (metadata, pHashes), which the re-scoring block leaves room for."""
    graph, factory = knn_graph(fs, cfg, out)
    # Every candidate is re-scored with the exact cosine: approximate (PQ/SQ) scores can be far off, and
    # false edges from them would chain unrelated images into one component.
    held = records_bytes + vector_bytes(vectors)
    block = rescore_block_rows(vectors.shape[1], cfg.memory_budget_gb, held)
    if held + block * vectors.shape[1] * 4 > cfg.memory_budget_gb * 2**30 and block < len(vectors):
        log.warning("dedup: --memory-budget %.1f GiB leaves no room for the exact re-scoring beside %.1f GiB of "
                    "records and vectors: it runs past the budget in blocks of %d rows (%d passes over the graph); "
                    "--plan shows the budget this pool needs", cfg.memory_budget_gb, held / 2**30, block,
                    -(-len(vectors) // block))
    i, j = rescored_edges(graph, vectors, cfg.threshold, block)
    info = {"index": factory, "candidates": int(fs.count * min(cfg.k, fs.count - 1)), "rescore_block_rows": block}
    return i, j, info


RESCORE_MIN_ROWS = 65536  # the smallest float32 block of the exact re-scoring, whatever the budget
STREAM_VALUE_BYTES = 10  # vectors read from the files: one file's float16 rows, its float32 decode, its stored values


def held_records(meta: pa.Table, phashes: int) -> int:
    """What dedup holds per row besides the vectors: the metadata as read and `phashes` uint64 pHashes a row."""
    return meta.nbytes + 8 * meta.num_rows * phashes


def vector_bytes(vectors: np.ndarray | StreamedRows) -> float:
    """What the vectors cost while dedup compares them: all of them when held, one feature file's when streamed."""
    if isinstance(vectors, StreamedRows):
        return max(vectors.fs.rows, default=0) * vectors.shape[1] * STREAM_VALUE_BYTES
    return float(vectors.nbytes)


def holds_vectors(n: int, dim: int, memory_budget_gb: float, records_bytes: float = 0.0) -> bool:
    """--memory-budget bounds what dedup holds past its imports: the per-row records (`records_bytes`), the vectors
    and one re-scoring block. The vectors are held (float16) when they fit it beside the smallest block; otherwise
    they are read from the feature files as needed (roots/rows.py): one pass per block, one for the groups."""
    return records_bytes + n * dim * 2 + min(n, RESCORE_MIN_ROWS) * dim * 4 <= memory_budget_gb * 2**30


def rescore_block_rows(dim: int, memory_budget_gb: float, held_bytes: float = 0.0) -> int:
    """Rows of one float32 block of the exact re-scoring: what the memory budget leaves beside `held_bytes` (the
    records and the vectors, see vector_bytes), at least RESCORE_MIN_ROWS. The vectors past one block are
    re-scored in further passes over the graph."""
    return max(RESCORE_MIN_ROWS, int((memory_budget_gb * 2**30 - held_bytes) / (4 * max(dim, 1))))


def memory_split(n: int, dim: int, memory_budget_gb: float, records_bytes: float, file_rows: int,
                 npy: bool = False) -> tuple[bool, int]:
    """(the vectors held?, rows of a re-scoring block) as the job decides them, for `--plan`: `records_bytes` the
    per-row records, `file_rows` the largest feature file's rows (what streaming holds of the vectors)."""
    held = npy or holds_vectors(n, dim, memory_budget_gb, records_bytes)
    vectors = n * dim * 2 if held else file_rows * dim * STREAM_VALUE_BYTES
    return held, rescore_block_rows(dim, memory_budget_gb, records_bytes + vectors)


def dedup_vectors(fs: FeatureSet, cfg: DedupConfig, records_bytes: float = 0.0) -> np.ndarray | StreamedRows:
    """The vectors as dedup compares them: held as float16 when they fit `cfg.memory_budget_gb` beside the
    `records_bytes` the job holds per row (or come from a .npy), else read from the feature files on demand (the
    same float16 values)."""
    dim = fs.dim(cfg.feature)
    if holds_vectors(fs.count, dim, cfg.memory_budget_gb, records_bytes) or fs.kind == NPY:
        return read_matrix(fs, cfg.feature, dtype=np.float16)
    log.info("dedup: %.1f GiB of float16 vectors and %.1f GiB of per-row records exceed --memory-budget %.1f GiB: "
             "the vectors are read from %s as needed (one pass per re-scoring block)", fs.count * dim * 2 / 2**30,
             records_bytes / 2**30, cfg.memory_budget_gb, fs.root)
    return StreamedRows(fs, cfg.feature)


def rescored_edges(graph: Path, vectors: np.ndarray | StreamedRows, threshold: float, block_rows: int = 1 << 22
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Graph edges whose exact cosine exceeds `threshold`, computed by Faiss (each image against its own k
    candidates, in C++): 64M pairs take seconds where a NumPy gather takes minutes. The candidates are
    held as float32 one block of `block_rows` rows at a time (one pass over the graph per block), so the
    float16 `vectors` are never copied whole."""
    d = vectors.shape[1]
    src, dst = [], []
    for start in range(0, len(vectors), block_rows):
        stop = min(start + block_rows, len(vectors))
        release_freed_memory()  # what Arrow and glibc keep of freed memory (Faiss's build, graph parts) goes first
        block = np.empty((stop - start, d), np.float32)
        for s in range(start, stop, 65536):  # no float16 copy of the whole block on the way
            block[s - start:min(s + 65536, stop) - start] = vectors[s:min(s + 65536, stop)]
        for ids, nb, _ in iter_parts(graph, similarities=False):
            for s in range(0, len(ids), 16384):
                q_ids, labels = ids[s:s + 16384], nb[s:s + 16384]
                inside = (labels >= start) & (labels < stop) & (labels != q_ids[:, None])
                if not inside.any():
                    continue
                local = np.ascontiguousarray(np.where(inside, labels - start, -1), dtype=np.int64)
                queries = np.ascontiguousarray(vectors[q_ids[0]:q_ids[-1] + 1] if q_ids[-1] - q_ids[0] == len(q_ids) - 1
                                               else vectors[q_ids], dtype=np.float32)
                sims = np.empty(labels.shape, np.float32)
                faiss.fvec_inner_products_by_idx(faiss.swig_ptr(sims), faiss.swig_ptr(queries), faiss.swig_ptr(block),
                                                 faiss.swig_ptr(local), d, len(q_ids), labels.shape[1])
                rows, cols = np.nonzero(inside & (sims > threshold))
                src.append(q_ids[rows])
                dst.append(labels[rows, cols])
        del block
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
    for ids, nb, _ in iter_parts(graph, similarities=False):
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


def contaminated_ids(pool: FeatureSet, pool_vectors: np.ndarray, pool_sha1: pa.Array | pa.ChunkedArray,
                     pool_hashes: list[np.ndarray], cfg: DedupConfig, use_embedding: bool) -> tuple[np.ndarray, dict]:
    """Pool ids that copy a reference image: byte-identical, a pHash within `phash_distance` bits in any of the
    8 orientations (with the embedding stage on: at cosine `phash_min_cosine` or more), or (when the embedding
    stage is on) within `reference_threshold` cosine. Returns the ids and how many each kind of evidence touched."""
    ref = open_features(cfg.reference)
    check_same_provenance(pool, ref)
    counts: dict[str, int] = {}
    ref_sha1 = read_meta(ref, ("sha1",)).column("sha1").drop_null()
    values = pool_sha1 if isinstance(pool_sha1, (pa.Array, pa.ChunkedArray)) else pa.array(pool_sha1, pa.binary())
    hit = pc.is_in(values, value_set=ref_sha1.cast(values.type).combine_chunks(), skip_nulls=True)
    exact = set(np.flatnonzero(hit.fill_null(False).to_numpy(zero_copy_only=False)).tolist())
    counts["exact"] = len(exact)
    ref_hashes = read_meta(ref, ("phash",)).column("phash").to_numpy()
    rows, hits = reference_phash_pairs(pool_hashes, ref_hashes, cfg.phash_distance)
    ref_vectors = read_matrix(ref, cfg.feature) if use_embedding else None
    if use_embedding and len(rows) and cfg.phash_min_cosine > -1:
        near_enough = pair_similarities(pool_vectors, rows, hits, ref_vectors) >= cfg.phash_min_cosine
        counts["phash_below_min_cosine"] = len(set(rows.tolist()) - set(rows[near_enough].tolist()))
        rows = rows[near_enough]
    perceptual = set(rows.tolist())
    counts["phash"] = len(perceptual)
    touched = exact | perceptual
    if use_embedding:
        index = faiss.IndexFlatIP(pool_vectors.shape[1])
        near: set[int] = set()
        for s in range(0, len(pool_vectors), 65536):
            index.reset()
            index.add(np.ascontiguousarray(pool_vectors[s:s + 65536], dtype=np.float32))
            _, _, labels = index.range_search(ref_vectors, cfg.reference_threshold)
            near.update((labels + s).tolist())
        counts["embedding"] = len(near)
        touched |= near
    return np.asarray(sorted(touched), np.int64), counts


def reference_phash_pairs(pool_hashes: list[np.ndarray], ref_hashes: np.ndarray, distance: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(pool row, reference row) of each pool image any of whose orientation hashes is within `distance` bits of a
    reference image's pHash, each pair once."""
    if not len(ref_hashes) or not len(pool_hashes[0]):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, hits = hamming_matches(ref_hashes, pool_hashes, distance, batch=65536)
    pairs = np.unique(np.stack([rows, hits], 1), axis=0)
    return pairs[:, 0], pairs[:, 1]
