"""Rates of this machine for the plan's time model, measured in seconds on a sample of the user's own vectors."""

from __future__ import annotations

import logging
import math
import re
import time

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.index.knn import knn_schema
from pipeline.index.plan import Rates, index_shape
from pipeline.roots.features import FeatureSet, feature_columns, iter_batches, to_matrix

log = logging.getLogger(__name__)

SAMPLE_ROWS = 16384  # enough for stable rates, read and measured in a few seconds


def read_sample(fs: FeatureSet, feature: str, rows: int = SAMPLE_ROWS) -> tuple[np.ndarray, float]:
    """(the first `rows` vectors, rows read and decoded per second, timed on the rows after them: the first
    batch pays for opening the files)."""
    got, held, timed_rows, start = [], 0, 0, None
    for batch in iter_batches(fs, feature_columns(feature), min(rows, 8192)):
        if held >= rows:
            to_matrix(batch, feature)  # decoded as a stage decodes it
            timed_rows += batch.num_rows
            if timed_rows >= rows:
                break
            continue
        got.append(to_matrix(batch, feature))
        held += batch.num_rows
        if held >= rows:
            start = time.perf_counter()
    rate = timed_rows / (time.perf_counter() - start) if start is not None and timed_rows else 0.0
    x = np.concatenate(got)[:rows] if got else np.zeros((0, fs.dim(feature)), np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), rate


def _timed(fn, repeat: int = 2) -> float:
    """Best of `repeat` runs: the machine is shared, the best is the closest to its own speed."""
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


GATHER_ROWS = 1 << 23  # the per-pair checks gather from arrays as large as the pool's, up to this many rows
BLOCK_ROWS = 1 << 17  # the exact re-scoring gathers candidates from a float32 block this large (past the caches)


def calibrate(x: np.ndarray, factory: str, k: int, read_rows: float, graph_rows: float, seed: int = 0,
              pool_rows: int = 0) -> Rates:
    """Rates measured on the sample `x` with the code type of `factory` (its inverted lists shrunk to 16). The
    per-pair work gathers at random from arrays the size of the pool's (`pool_rows`, capped), as the jobs do: a
    sample that fits the caches would time it several times too fast."""
    n, d = x.shape
    if n < 1024:
        raise ValueError(f"calibration needs at least 1,024 sample vectors, got {n}")
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(n, min(1024, n), replace=False)]
    flat = faiss.IndexFlatIP(d)
    flat.add(centroids)
    q = x[: min(n, 4096)]
    gemm = len(q) * len(centroids) * d * 2 / _timed(lambda: flat.search(q, 1))
    shape = index_shape(factory, d)
    small = re.sub(r"IVF\d+", "IVF16", factory) if shape.kind == "ivf" else "IVF16,Flat"
    index = faiss.index_factory(d, small, faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.min_points_per_centroid = 1
    index.train(x[: min(n, 8192)])
    t = time.perf_counter()
    index.add(x)
    encode = (time.perf_counter() - t) / n
    ivf = faiss.extract_index_ivf(index)
    queries = x[: min(n, 1024)]
    timings = []
    for nprobe in (1, 16):  # one list, then every list: the cost per query and per code scanned
        ivf.nprobe = nprobe
        seconds = _timed(lambda: index.search(queries, k + 1), repeat=3) / len(queries)
        timings.append((n * nprobe / 16, seconds))
    (l1, t1), (l2, t2) = timings
    per_code = max((t2 - t1) / (l2 - l1), 1e-11)  # at most 100 G codes/s: noise cannot make it free
    fixed = max(t1 - l1 * per_code, 1e-7)
    rows = max(n, min(pool_rows, BLOCK_ROWS))
    block = x if rows == n else np.tile(x, (-(-rows // n), 1))[:rows]
    labels = rng.integers(0, rows, (min(n, 4096), k)).astype(np.int64)
    sims = np.empty(labels.shape, np.float32)
    queries = np.ascontiguousarray(x[:len(labels)])
    rescore = labels.size / _timed(lambda: faiss.fvec_inner_products_by_idx(
        faiss.swig_ptr(sims), faiss.swig_ptr(queries), faiss.swig_ptr(block), faiss.swig_ptr(labels), d,
        len(labels), k))
    block = None  # freed before the pHash arrays are made
    size = max(n, min(pool_rows, GATHER_ROWS))
    hashes = rng.integers(0, 2**63, size, dtype=np.int64).view(np.uint64)
    a, b = rng.integers(0, size, (2, min(size, 1 << 20)))
    pair_checks = len(a) / _timed(lambda: np.bitwise_count(hashes[a] ^ hashes[b]) <= 8)
    hashes = hashes[:n]
    codes = np.ascontiguousarray(hashes[:4096].view(np.uint8).reshape(-1, 8))
    binary = faiss.IndexBinaryFlat(64)
    binary.add(codes)
    hamming = len(codes) ** 2 / _timed(lambda: binary.range_search(codes, 9))
    keys = [bytes(rng.integers(0, 256, 20, dtype=np.uint8)) for _ in range(min(n, 10000))]
    python_rows = len(keys) / _timed(lambda: {h: i for i, h in enumerate(keys)})
    rates = Rates(gemm_flops=gemm, scan_codes=1 / per_code, query_seconds=fixed, encode_seconds=encode,
                  read_rows=read_rows, graph_rows=graph_rows, rescore_pairs=rescore, pair_checks=pair_checks,
                  hamming_pairs=hamming, python_rows=python_rows, measured=True)
    log.info("plan: rates on %d sample vectors: %.0f GFLOP/s, %.0f M codes/s + %.0f µs a query, %.1f µs to encode "
             "a vector, %.0f rows/s read", n, gemm / 1e9, 1 / per_code / 1e6, fixed * 1e6, encode * 1e6, read_rows)
    return rates


def column_bytes(fs: FeatureSet, columns: tuple[str, ...]) -> tuple[float, float]:
    """(compressed bytes on disk, uncompressed bytes) per row of `columns` in the feature files (footers only)."""
    disk = raw = rows = 0
    for path in [f for f in fs.files if str(f).endswith(".parquet")][:8]:
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                if col.path_in_schema.split(".")[0] in columns:
                    disk += col.total_compressed_size
                    raw += col.total_uncompressed_size
    return disk / max(rows, 1), raw / max(rows, 1)


def graph_part(n: int, k: int, part_rows: int = 65536, seed: int = 0) -> tuple[float, float]:
    """(bytes on disk of one k-NN graph row, rows read back per second): one part of seeded rows (neighbour ids
    spread over all `n`, sorted similarities) written as build_graph writes it and read as the re-scoring reads
    it. Ids compress with a dictionary while a part holds few distinct ones, and to their significant bytes
    after that: the part's real size is what tells."""
    rows = max(1, min(part_rows, n))
    rng = np.random.default_rng(seed)
    nb = rng.integers(0, max(n, 1), (rows, k))
    sims = -np.sort(-rng.uniform(0.2, 0.95, (rows, k)).astype(np.float32), axis=1)
    table = pa.table({"id": np.arange(rows, dtype=np.int64),
                      "neighbours": pa.FixedSizeListArray.from_arrays(pa.array(nb.ravel()), k),
                      "similarities": pa.FixedSizeListArray.from_arrays(pa.array(sims.ravel()), k)},
                     schema=knn_schema(k))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")  # as io.files.write_parquet_atomic writes a part
    data = sink.getvalue()
    seconds = _timed(lambda: pq.read_table(pa.BufferReader(data), columns=["id", "neighbours"])
                     .column("neighbours").chunk(0).flatten().to_numpy(zero_copy_only=False))
    return data.size / rows, rows / max(seconds, 1e-9)
