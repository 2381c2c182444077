"""Configuration of the dedup stage: one frozen dataclass; every default is declared here once."""

from __future__ import annotations

from dataclasses import dataclass


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
