"""Configuration of the curate stage: a curation and an export, one frozen dataclass each."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.curate.cluster import SAMPLING
from pipeline.curate.hkmeans import resolve_plan
from pipeline.errors import ConfigError
from pipeline.roots.external import NPY_DTYPES
from pipeline.roots.features import check_feature

EXPORT_FORMATS = ("webdataset", "uids")


@dataclass(frozen=True)
class CurateConfig:
    pool: str  # extract output root of the (deduplicated) uncurated pool, or a .npy / Parquet made elsewhere
    keys: str | None = None  # a .npy pool's keys, one a line (default: row numbers)
    queries: tuple[tuple[str, str], ...] = ()  # (source name, extract output root of its seed set)
    out: str | None = None  # default: <pool>/curate
    mode: str = "auto"  # sample | cluster | auto
    where: str | None = None  # --where EXPR: only matching pool rows may be selected (roots/where.py)
    feature: str = "cls"
    k: int = 4  # sample-based: neighbours per query (LVD-142M: 4; 32 for ImageNet-1k)
    min_similarity: float = 0.0
    clusters: int | None = None  # cluster-based: k-means clusters on the pool (default ≈ N / 500)
    min_queries: int = 3  # a cluster contributes when more than this many queries fall in it
    per_cluster: int = 10_000
    max_per_source: int = 1_000_000
    auto_threshold: int = 100_000  # seed sets at least this large are sample-based under --mode auto
    balanced: int | None = None  # target size: hierarchical k-means + balanced sampling, no seeds needed
    levels: int | None = None  # hierarchical k-means levels (default by pool size: curate/hkmeans.py TIERS)
    levels_k: tuple[int, ...] = ()  # clusters per level, finest first (overrides levels)
    resample_steps: tuple[int, ...] = ()  # per level, or one for all (default: 10 or 3 on the leaves, 0 above)
    resample_size: tuple[int, ...] = ()  # items kept per cluster in a step (default: half the mean cluster size)
    sampling: str = "random"  # at the leaves: random | closest (to the leaf centroid)
    memory_budget_gb: float = 4.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "sample", "cluster"):
            raise ConfigError(f"mode must be auto, sample or cluster, got {self.mode!r}")
        if not self.queries and self.balanced is None:
            raise ConfigError("give seed sets (QUERIES=name=OUT,...) or --balanced TARGET_SIZE")
        names = [n for n, _ in self.queries]
        if len(set(names)) != len(names):
            raise ConfigError(f"seed set names must be unique: {names}")
        if self.levels is not None and self.levels < 1:
            raise ConfigError(f"--levels must be at least 1, got {self.levels}")
        if self.levels and self.levels_k and self.levels != len(self.levels_k):
            raise ConfigError(f"--levels {self.levels} but --levels-k gives {len(self.levels_k)} levels: give one")
        if self.sampling not in SAMPLING:
            raise ConfigError(f"--sampling must be one of {', '.join(SAMPLING)}, got {self.sampling!r}")
        if self.levels_k or self.levels:  # the plan is checked now; its default sizes depend on the pool
            resolve_plan(10**6, self.levels, self.levels_k, self.resample_steps, self.resample_size)


@dataclass(frozen=True)
class ExportConfig:
    selection: str  # dedup/groups.parquet (rows with keep) or curate/selected.parquet (all rows)
    out: str
    features: str | None = None  # the extract output root the selection refers to (default: inferred)
    shard_size: int = 1000
    prefix: str = "export"
    progress: bool = True
    format: str = "webdataset"  # or "uids": the selection's keys as DataComp-style uids.npy + keys.txt
    where: str | None = None  # --where EXPR over the source's rows: only matching selected rows are exported

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {self.format!r}")


@dataclass(frozen=True)
class ExportNpyConfig:
    features: str  # extract output root, or features made elsewhere
    out: str  # folder for emb.npy, keys.parquet and emb.provenance.json
    feature: str = "cls"
    dtype: str = "float32"  # of emb.npy: float32, or float16 (half the size; cosine within ~1e-3)
    keys: str | None = None  # a .npy FEATURES's keys, one a line
    batch_rows: int = 65536
    progress: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in NPY_DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(NPY_DTYPES)}, got {self.dtype!r}")
        if self.batch_rows < 1:
            raise ConfigError("batch_rows must be >= 1")
        check_feature(self.feature, self.features)
