"""The Python API for notebooks: one call per stage, taking the stage's frozen config, returning a typed result.

    from pipeline import api
    stats = api.extract(api.ExtractConfig(out="out/photos", images="photos/", weights="random"))
    dup = api.dedup(api.DedupConfig(features="out/photos"))
    dup.kept, dup.groups_path, dup.table().to_pandas()

Each result holds the figures people read (counts, paths) as attributes and the stage's full JSON record in
`.record`; the files it names are described in docs/FORMAT.md. Errors meant for the user derive from
`pipeline.errors.UserError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.curate.config import CurateConfig, ExportConfig
from pipeline.curate.results import CurateResult, ExportResult
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.results import AgainstResult, DedupResult, FolderDedupResult, SweepResult
from pipeline.errors import UserError
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.results import EvalResult
from pipeline.extract.config import ExtractConfig
from pipeline.extract.runner import ExtractStats
from pipeline.index.build import LoadedIndex, load_index
from pipeline.index.config import IndexConfig, KnnConfig
from pipeline.index.results import IndexResult, KnnResult
from pipeline.report.config import ReportConfig
from pipeline.report.results import ReportResult

__all__ = [
    "ExtractConfig", "IndexConfig", "KnnConfig", "DedupConfig", "CurateConfig", "ExportConfig", "EvalConfig",
    "ReportConfig", "ExtractStats", "IndexResult", "KnnResult", "DedupResult", "AgainstResult", "SweepResult",
    "FolderDedupResult", "CurateResult", "ExportResult", "EvalResult", "ReportResult", "UserError",
    "extract", "features", "index", "open_index", "knn", "search", "dedup", "dedup_images", "curate", "export",
    "evaluate", "report",
]


def extract(cfg: ExtractConfig) -> ExtractStats:
    """Features of every shard (or folder chunk) not yet done into `cfg.out`; resumable."""
    from pipeline.extract.runner import run_extract

    return run_extract(cfg)


def features(root: str | Path, feature: str = "cls") -> tuple[pa.Table, np.ndarray]:
    """(metadata in id order: id, key, shard, index, width, height, sha1, phash; (N, D) float32 L2-normalised
    vectors) of an extract output; `feature` is cls, patch_mean or concat."""
    from pipeline.roots.features import open_features, read_matrix, read_meta

    fs = open_features(root)
    return read_meta(fs), read_matrix(fs, feature)


def index(cfg: IndexConfig) -> IndexResult:
    """A Faiss index over an extract output (automatic type by size and memory, or `cfg.factory`)."""
    from pipeline.index.build import run_index

    return run_index(cfg)


def open_index(path: str | Path) -> LoadedIndex:
    """A built index with its ids table and record, search parameters set as recorded."""
    return load_index(path)


def knn(cfg: KnnConfig) -> KnnResult:
    """The all-vs-all k-NN graph (resumable Parquet parts)."""
    from pipeline.index.knn import run_knn

    return run_knn(cfg)


def search(index_dir: str | Path, query: str | Path, k: int = 10) -> pa.Table:
    """Top-k neighbours of an image, a folder, shards or an extract output: one row per (query, rank)."""
    from pipeline.index.search import run_search

    return run_search(str(index_dir), str(query), k)


def dedup(cfg: DedupConfig) -> DedupResult | AgainstResult | SweepResult:
    """Exact, perceptual and embedding near-duplicates → components → one keeper each (nothing deleted); with
    `cfg.against`, new images against a processed collection; with `cfg.sweep`, a dry run per threshold."""
    from pipeline.dedup.run import run_dedup

    return run_dedup(cfg)


def dedup_images(extract_cfg: ExtractConfig, cfg: DedupConfig | None = None) -> FolderDedupResult:
    """A folder in one call: extract (cached), dedup, duplicates.csv; files are never touched."""
    from dataclasses import replace

    from pipeline.dedup.run import dedup_images as run

    return run(extract_cfg, replace(cfg or DedupConfig(features=extract_cfg.out), features=extract_cfg.out))


def curate(cfg: CurateConfig) -> CurateResult:
    """LVD-142M retrieval from a pool near named seed sets, or balanced sampling."""
    from pipeline.curate.retrieval import run_curate

    return run_curate(cfg)


def export(cfg: ExportConfig) -> ExportResult:
    """A selection (dedup keepers or curate selection) copied byte for byte into new webdataset shards."""
    from pipeline.curate.export import run_export

    return run_export(cfg)


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Weighted k-NN and linear-probe accuracy of frozen features."""
    from pipeline.evaluate.run import run_evaluate

    return run_evaluate(cfg)


def report(cfg: ReportConfig) -> ReportResult:
    """A self-contained HTML report of an output root."""
    from pipeline.report.run import run_report

    return run_report(cfg)
