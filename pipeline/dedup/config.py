"""Configuration of the dedup stage: one frozen dataclass; every default is declared here once."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class DedupConfig:
    """Settings of one dedup run over an extract output root (and an optional reference set)."""

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
    # extract output of a collection already processed: the new images are checked against it, never regrouping it
    against: str | None = None
    reference_threshold: float = 0.45
    # a decontamination dropping a larger share of the pool stops (the threshold is likely wrong for the model)
    max_contaminated: float = 0.1
    force: bool = False  # drop them anyway
    memory_budget_gb: float = 4.0
    large_component: int = 1000  # warn when a component is larger
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.max_contaminated <= 1:
            raise ConfigError(f"max_contaminated is a share of the pool, 0 to 1; got {self.max_contaminated}")
        if self.k < 1:
            raise ConfigError("k must be >= 1")
        if self.against and self.reference:
            raise ConfigError("--against and --reference are separate runs: decontaminate the collection first, "
                              "then check new images against it")
        if not 0 <= self.phash_distance <= 64:
            raise ConfigError(f"phash_distance must be 0 to 64 bits, got {self.phash_distance}")
