"""The memory, disk and time model of index, k-NN graph, dedup and balanced curation: one function, `predict`.

Each stage's peak is the process's base (Python, torch, Faiss, Arrow after import) plus the structures it holds
at its fullest moment, named in `StagePlan.held`; `OVERHEAD` is the stated allowance on top (allocator slack,
Python objects not listed). Time comes from rates measured on a sample of the user's own vectors (`Rates`),
extrapolated by the work each stage does (coarse-quantizer products, codes scanned, pairs re-scored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import faiss

from pipeline.errors import ConfigError

GIB = 2**30
OVERHEAD = 0.15  # stated allowance over the listed structures (allocator slack, transient copies not listed)
BASE_BYTES = 0.8 * GIB  # a job process after its imports (torch, Faiss, Arrow); `--plan` measures its own
KMEANS_ITERATIONS = 10  # base.seed_clustering
LIST_SLACK = 1.1  # inverted lists grow by doubling while vectors are added; the spare capacity is mostly never
# touched (not resident), so it costs a tenth, not a half
EXACT_ROW = 48  # the exact stage: Arrow's dictionary of the sha1s, its indices, first rows (transient)
HASHES_ROW = 64  # the pHash and its seven turned/flipped variants, uint64 (the variants go before the re-scoring)
PHASH_ROW = 8  # the pHash alone, held to the end
GROUPS_ROW = 280  # components, keepers, nearest, reasons, the groups table and duplicates.csv being written
CURATE_ROW = 52  # balanced: labels and cosines per row (12 B), plus a sort's indices (40 B)


@dataclass(frozen=True)
class IndexShape:
    """What an index of `factory` stores per vector and once (from an empty Faiss index of it, nothing trained)."""

    factory: str
    kind: str  # flat, ivf, hnsw or other
    nlist: int  # inverted lists (1 for flat)
    code_bytes: float  # stored bytes per vector, ids of the inverted lists included
    fixed_bytes: float  # centroids, codebooks
    fastscan: bool

    @property
    def index_bytes_per_row(self) -> float:
        return self.code_bytes


def index_shape(factory: str, dim: int) -> IndexShape:
    """The shape of `factory` at `dim`; a string Faiss does not parse is a ConfigError."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        why = str(exc).strip().splitlines()[-1].rpartition(": ")[2]
        raise ConfigError(f"--factory {factory!r} is not an index Faiss can build ({why})") from None
    top = faiss.downcast_index(index)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        fastscan = isinstance(ivf, faiss.IndexIVFFastScan)
        refine = dim * 4 if isinstance(top, faiss.IndexRefine) else 0
        return IndexShape(factory, "ivf", int(ivf.nlist), ivf.code_size + 8 + refine, ivf.nlist * dim * 4,
                          fastscan)
    if isinstance(top, faiss.IndexFlat):
        return IndexShape(factory, "flat", 1, dim * 4, 0, False)
    hnsw = getattr(top, "hnsw", None)
    if hnsw is not None:  # float32 vectors + ~2·M links of 4 bytes at level 0, a little more above it
        m = int(faiss.vector_to_array(hnsw.cum_nneighbor_per_level)[1]) if hnsw.cum_nneighbor_per_level.size() > 1 \
            else 64
        return IndexShape(factory, "hnsw", 1, dim * 4 + m * 4 * 1.1 + 8, 0, False)
    return IndexShape(factory, "other", 1, getattr(top, "code_size", dim * 4) or dim * 4, 0, False)


@dataclass(frozen=True)
class Rates:
    """What the machine does per second, measured on a sample (see `calibrate` in index/calibrate.py)."""

    gemm_flops: float = 100e9  # float32 inner products (coarse quantizer, k-means, brute force)
    scan_codes: float = 5e8  # codes scanned per second by the index's search, past its per-query cost
    query_seconds: float = 25e-6  # fixed cost of one k-NN query (result heaps, the call)
    encode_seconds: float = 4e-6  # encoding one vector into the index (past the coarse quantizer)
    read_rows: float = 2e5  # feature rows read and decoded per second
    graph_rows: float = 3e5  # k-NN graph rows read per second (their neighbours)
    rescore_pairs: float = 4e6  # exact (vector, candidate) inner products per second
    pair_checks: float = 2e7  # NumPy per-pair checks per second (pHash of k-NN neighbours)
    hamming_pairs: float = 1e9  # pHash pairs compared per second by Faiss's binary range search (all pairs)
    python_rows: float = 2e6  # per-row Python work per second (sha1 dict, keys)
    measured: bool = False  # False: the defaults above, for figures on paper


@dataclass(frozen=True)
class Workload:
    """Everything the model needs: the job's own choices (factory, nprobe, k, budgets) already resolved."""

    n: int
    dim: int
    factory: str
    stored_bytes: int = 2  # bytes per component in the feature files (float16)
    nprobe: int | None = None  # IVF lists searched per query by the graph (None: the index's default)
    k: int = 64
    train_size: int = 256 * 1024
    batch_rows: int = 65536
    part_rows: int = 65536
    rescore_rows: int = 1 << 22  # dedup: rows of one float32 block of the exact re-scoring
    vectors_held: bool = True  # dedup: the vectors held as float16, else read from the files per block
    file_rows: int = 100_000  # dedup, vectors read from the files: rows of the largest feature file (one is kept)
    phash_all_pairs: bool = False  # dedup: pHashes compared all pairs × 8 orientations (small pools), else k-NN
    meta_row_bytes: float = 80  # dedup: its metadata columns in memory, per row (measured from the files)
    ids_row_bytes: float = 24  # key, shard, index: in memory per row while ids.parquet is written
    ids_disk_row_bytes: float = 12  # ids.parquet on disk per row (the files' own compressed sizes)
    graph_disk_row_bytes: float | None = None  # one graph row on disk (None: 12·k, the bytes it holds)
    groups_disk_row_bytes: float = 40  # groups.parquet per row
    base_bytes: float = BASE_BYTES
    startup_seconds: float = 0.0  # the job's process start and imports (`--plan` measures its own)
    parts: int = 1  # index --parts / knn --workers (processes or Ray tasks, each holding its share)
    curate_leaf_k: int = 0  # balanced: clusters of the leaf level (0: no balanced stage)
    curate_budget_bytes: float = 4 * GIB


@dataclass(frozen=True)
class StagePlan:
    """One stage: predicted peak RSS (listed structures + base, times 1 + OVERHEAD), disk written, seconds."""

    name: str
    peak_bytes: float
    disk_bytes: float
    seconds: float | None
    bound_by: str  # the structure that dominates the peak
    streams: str  # what is read from disk as it goes instead of being held
    held: dict[str, float] = field(default_factory=dict)  # structure → bytes at the peak


@dataclass(frozen=True)
class Plan:
    workload: Workload
    shape: IndexShape
    rates: Rates
    stages: dict[str, StagePlan]
    overhead: float = OVERHEAD


def _peak(name: str, base: float, held: dict[str, float], disk: float, seconds: float | None, streams: str
          ) -> StagePlan:
    held = {k: float(v) for k, v in held.items() if v > 0}
    bound = max(held, key=held.get) if held else "base"
    return StagePlan(name, (base + sum(held.values())) * (1 + OVERHEAD), disk, seconds, bound, streams,
                     {"base (imports)": base, **held})


def _coarse_seconds(w: Workload, s: IndexShape, r: Rates) -> float:
    """One vector through the brute-force coarse quantizer."""
    return s.nlist * w.dim * 2 / r.gemm_flops if s.kind == "ivf" else 0.0


def _scanned(w: Workload, s: IndexShape) -> float:
    """Codes one graph query scans."""
    if s.kind == "ivf":
        return w.n * min(s.nlist, w.nprobe or max(16, s.nlist // 64)) / s.nlist
    return w.n if s.kind == "flat" else 2000.0  # HNSW: ~ef·M distance computations


def predict(w: Workload, rates: Rates | None = None) -> Plan:
    """Peak memory, disk and time of each stage (index, graph, dedup, and balanced when `curate_leaf_k`)."""
    if w.n < 1 or w.dim < 1:
        raise ConfigError(f"nothing to plan: {w.n} vectors of {w.dim} dimensions")
    if w.k < 1:
        raise ConfigError(f"k must be >= 1, got {w.k}")
    r = rates or Rates()
    s = index_shape(w.factory, w.dim)
    n, d, k, parts = w.n, w.dim, w.k, max(1, w.parts)
    stages: dict[str, StagePlan] = {}
    # index: train on a sample, add batches read from the feature files, write index.faiss + ids.parquet
    codes = n * s.code_bytes + (s.nlist * 16 * (s.code_bytes - 8) if s.fastscan else 0)
    index = codes + s.fixed_bytes
    train = min(n, w.train_size, 64 * s.nlist) if s.kind == "ivf" else 0
    residuals = s.kind == "ivf" and s.code_bytes - 8 < d * 4  # PQ/SQ train on residuals: a second copy
    index_phases = {
        "training sample": train * d * 4 * (2 if residuals else 1) + s.fixed_bytes,
        "index while adding (lists grow by doubling) + one batch":
            codes / parts * LIST_SLACK + s.fixed_bytes + min(w.batch_rows, n) * d * (w.stored_bytes + 8),
        "index + the ids table being written": index + n * w.ids_row_bytes * 2,
    }
    index_phase = max(index_phases, key=index_phases.get)
    coarse = s.nlist * d * 2 / r.gemm_flops if s.kind == "ivf" else 0.0
    index_s = (w.startup_seconds + KMEANS_ITERATIONS * train * s.nlist * d * 2 / r.gemm_flops + train * r.encode_seconds
               + n * (coarse + r.encode_seconds) / parts + n / r.read_rows)
    index_disk = index + n * w.ids_disk_row_bytes
    stages["index"] = _peak("index", w.base_bytes, {index_phase: index_phases[index_phase]}, index_disk, index_s,
                            f"the vectors, read in batches of {w.batch_rows:,} rows (never held whole)")
    # graph: the index loaded, one part of vectors and its results at a time, each part written as it is done
    part_rows = min(w.part_rows, n)
    part = part_rows * d * 4 * 3 + part_rows * (k + 1) * 12 * 4
    if s.kind == "ivf" and s.fastscan:  # Faiss's look-up tables of one search batch (16,384 queries): 16 bytes per
        # probed list and half-byte code, measured with memray at 200k × 384 (IVF1788,PQ48x4fs, nprobe 32: 197 MiB)
        part += min(16384, part_rows) * min(s.nlist, w.nprobe or max(16, s.nlist // 64)) * (s.code_bytes - 8) * 16
    graph_disk = n * (w.graph_disk_row_bytes if w.graph_disk_row_bytes is not None else 12 * k)
    if s.kind == "ivf":
        scanned = n * min(s.nlist, w.nprobe or max(16, s.nlist // 64)) / s.nlist
        per_query = coarse + r.query_seconds + scanned / r.scan_codes
    elif s.kind == "flat":
        per_query = r.query_seconds + n * d * 2 / r.gemm_flops
    else:  # HNSW and others: ~2,000 distance computations a query
        per_query = r.query_seconds + 2000 * d * 2 / r.gemm_flops * 10
    graph_s = n * per_query / parts + n / r.read_rows + w.startup_seconds
    stages["graph"] = _peak("graph", w.base_bytes, {"index (codes + ids)": index, "one part of vectors + results":
                                                    part}, graph_disk, graph_s,
                            f"the vectors, one part of {w.part_rows:,} rows at a time; the graph, written per part")
    # dedup (make dedup): one process holds the vectors (float16) and per-row records, builds the index and the
    # graph above, then re-scores the candidates exactly, block by block, and writes groups.parquet. Its three
    # windows (until the index is written, until the graph is complete, the rest) are "dedup:index",
    # "dedup:graph" and "dedup:rest"; "dedup" is the job as a whole.
    vectors = {"vectors (float16)" if w.vectors_held else "one feature file's vectors (float16, read as needed)":
               n * d * 2 if w.vectors_held else min(w.file_rows, n) * d * (2 + 4 + w.stored_bytes)}
    rows = {**vectors, "metadata (Arrow), pHashes and their turned/flipped variants":
            n * (w.meta_row_bytes + HASHES_ROW)}
    rest_rows = {**vectors, "metadata (Arrow), pHashes": n * (w.meta_row_bytes + PHASH_ROW)}
    blocks = math.ceil(n / max(w.rescore_rows, 1))
    windows = {
        "index": {"exact stage (the sha1s grouped by Arrow)": n * EXACT_ROW,
                  f"index build: {index_phase}": index_phases[index_phase]},
        "graph": {"graph: index + one part": index + part},
        "rest": {"exact re-scoring: one float32 block of the vectors": min(w.rescore_rows, n) * d * 4
                 + min(16384, n) * k * 40 + part_rows * k * 12 * 3,
                 "groups: components, keepers, reasons, the table": n * GROUPS_ROW},
    }
    pairs = n * min(k, n - 1)
    all_pairs = n * n * 8 / r.hamming_pairs if w.phash_all_pairs else 0.0
    seconds = {"index": 2 * n / r.read_rows + 2 * n / r.python_rows + all_pairs + index_s,
               "graph": graph_s - w.startup_seconds,
               "rest": pairs * 16 / r.pair_checks + (blocks + 1) * n / r.graph_rows + pairs / r.rescore_pairs
               + 3 * n / r.python_rows + (0 if w.vectors_held else (blocks + 1) * n / r.read_rows)}
    disks = {"index": index_disk, "graph": graph_disk, "rest": n * w.groups_disk_row_bytes}
    streams = {"index": stages["index"].streams, "graph": stages["graph"].streams,
               "rest": f"the graph ({blocks} pass(es), each against one float32 block of the vectors); the vectors "
                       + ("themselves are held, as float16" if w.vectors_held else
                          "are read from the feature files once per block and once more for the groups")}
    for name, phases in windows.items():
        worst = max(phases, key=phases.get)
        held = rest_rows if name == "rest" else rows
        stages[f"dedup:{name}"] = _peak(f"dedup:{name}", w.base_bytes, {**held, worst: phases[worst]}, disks[name],
                                        seconds[name], streams[name])
    top = max((stages[f"dedup:{name}"] for name in windows), key=lambda st: st.peak_bytes)
    stages["dedup"] = replace(top, name="dedup", disk_bytes=sum(disks.values()), seconds=sum(seconds.values()),
                              streams=streams["rest"])
    if w.curate_leaf_k:
        vectors = n * d * 2
        held = vectors <= w.curate_budget_bytes
        stages["balanced"] = _peak(
            "balanced", w.base_bytes,
            {"vectors (float16)": vectors if held else 0, "labels, cosines, sort indices": n * CURATE_ROW,
             "k-means training set + one chunk": w.curate_leaf_k * 64 * d * 4 + 65536 * d * 4 * 2},
            0.0, None, "nothing: the vectors are held as float16" if held else
            "the vectors, read from the feature files on every pass (they exceed --memory-budget)")
    return Plan(w, s, r, stages)
