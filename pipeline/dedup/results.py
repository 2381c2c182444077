"""What a dedup run returns: counts and paths as attributes, summary.json's record in `record`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # extract.runner imports torch: not needed to read a result
    from pipeline.extract.runner import ExtractStats


@dataclass(frozen=True)
class DedupResult:
    """One collection deduplicated: dedup/groups.parquet and dedup/summary.json (written from `record`)."""

    images: int
    kept: int
    duplicates: int  # removed as copies of a kept image
    contaminated: int  # removed as near-copies of the reference set
    groups: int  # components with more than one image
    largest_group: int
    reasons: dict[str, int]
    groups_path: Path  # dedup/groups.parquet: one row per image
    summary_path: Path  # dedup/summary.json
    warning: str | None
    seconds: float
    stages: dict[str, dict]  # per kind of edge (exact, phash, embedding, reference): edges, or why skipped
    keep: dict  # the keep policy and what it read (policy, seed, clusters, unreadable ...)
    where: dict | None  # --where: expression, excluded
    weights: dict | None  # the features' weights record (None: made elsewhere, unknown)
    record: dict = field(repr=False)
    listed: int | None = None  # rows of the root's duplicates.csv, rewritten by this run (None: not a folder's)
    def table(self) -> pa.Table:
        """groups.parquet: key, shard, index, id, component, component_size, keep, nearest_*, reason."""
        return pq.read_table(self.groups_path)


@dataclass(frozen=True)
class AgainstResult:
    """New images against a collection already processed: dedup/against.parquet and dedup/summary.json."""

    images: int  # new images
    collection: int  # images of the old collection
    against: Path
    kept: int
    duplicates_of_old: int
    duplicates_of_new: int
    reasons: dict[str, int]
    against_path: Path  # dedup/against.parquet: one row per new image
    summary_path: Path
    seconds: float
    record: dict = field(repr=False)

    def table(self) -> pa.Table:
        return pq.read_table(self.against_path)


@dataclass(frozen=True)
class SweepResult:
    """A dry run: what each embedding threshold would remove; dedup/sweep.parquet only."""

    images: int
    k: int
    rows: list[dict]  # per threshold: threshold, removed, share, groups, largest_group
    stages: dict
    path: Path  # dedup/sweep.parquet
    seconds: float
    record: dict = field(repr=False)


@dataclass(frozen=True)
class FolderDedupResult:
    """What `dedup_images` did: the extraction, then (when every shard was read) the dedup and the CSV."""

    extract: ExtractStats
    dedup: DedupResult | SweepResult | None  # None when some shards could not be read: rerun to retry them
    csv: Path | None  # duplicates.csv: each duplicate file with the file kept
    duplicate_files: int = 0
