"""Configuration of the index stage: the index, the k-NN graph and a search, one frozen dataclass each."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.roots.features import check_feature
from pipeline.tasks import EXECUTORS


@dataclass(frozen=True)
class IndexConfig:
    features: str  # extract output root, or a .npy / Parquet made elsewhere
    out: str | None = None  # default: <features>/index (made elsewhere: <features>.dinocurate/index)
    keys: str | None = None  # a .npy's keys, one a line (default: row numbers)
    feature: str = "cls"
    factory: str | None = None  # e.g. "IVF4096,PQ32"; None = choose from N and the budget
    memory_budget_gb: float = 4.0
    train_size: int = 256 * 1024  # upper bound on training vectors
    batch_rows: int = 65536
    nprobe: int | None = None  # IVF lists searched; None = a recall-oriented default
    ef_search: int = 128  # HNSW
    k_factor: int = 32  # refine stages (",RFlat", "Refine(...)") re-rank k × k_factor candidates exactly
    seed: int = 0
    parts: int = 1  # IVF only: add the vectors in this many parallel parts and merge their lists
    executor: str = "local"  # runs the parts: local processes or Ray tasks
    progress: bool = True
    update: bool = False  # add the shards the existing index does not hold yet, without retraining

    def __post_init__(self) -> None:
        check_feature(self.feature, self.features)
        if self.parts < 1:
            raise ConfigError("parts must be >= 1")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")


@dataclass(frozen=True)
class KnnConfig:
    """The all-vs-all k-NN graph of an extract output, over an index built from it."""

    features: str  # extract output root, or a .npy / Parquet made elsewhere
    keys: str | None = None  # a .npy's keys, one a line (checked; the graph holds ids only)
    index: str | None = None  # index folder (default: FEATURES/index)
    out: str | None = None  # graph folder (default: FEATURES/knn)
    k: int = 64
    nprobe: int | None = None  # IVF lists searched per image (default: what the index records)
    workers: int = 1  # parallel processes or Ray tasks
    executor: str = "local"
    part_rows: int = 65536
    progress: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError("k must be >= 1")
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")


@dataclass(frozen=True)
class SearchConfig:
    """A search as the command line runs it: `run_search(index, query, k)`, then where the results go."""

    index: str  # index folder, or the extract output holding index/
    query: str  # an image, an image folder, shard specs, or an extract output
    k: int = 10  # neighbours per query
    out: str | None = None  # also write the results (.csv or .parquet)
    html: str | None = None  # also write the neighbours as a web page (thumbnails in thumbs/ beside it)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
