"""What the curate stage returns: counts and paths as attributes, the JSON record in `record`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class CurateResult:
    """A curation: curate/selected.parquet and curate/summary.json (written from `record`)."""

    pool: int
    selected: int
    sources: dict[str, dict]  # per seed set: queries, mode, why, selected, unique
    balanced: dict | None  # --balanced: selected, levels, resample_steps, sampling, top-level cluster sizes
    selected_path: Path  # curate/selected.parquet
    summary_path: Path  # curate/summary.json
    seconds: float
    record: dict = field(repr=False)

    def table(self) -> pa.Table:
        return pq.read_table(self.selected_path)


@dataclass(frozen=True)
class ExportResult:
    """An export: new shards, shards.txt and manifest.json (written from `record`) in `out`; or, format "uids",
    uids.npy and keys.txt."""

    out: Path
    format: str  # webdataset | uids
    samples: int
    shards: list[str]  # names of the shards written (none for uids)
    rejected: int  # samples refused for unsafe member names
    uids: str | None  # format "uids": how the keys became uids
    record: dict = field(repr=False)
