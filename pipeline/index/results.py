"""What the index stage returns: counts and paths as attributes, the JSON record in `record`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class IndexResult:
    """An index built or updated: index.faiss, ids.parquet and index.json (written from `record`) in `path`."""

    path: Path  # the index folder
    factory: str
    count: int
    dim: int
    feature: str
    seconds: float  # to build it (an update: to add the new vectors)
    added: int | None  # an update: vectors added (0: nothing new); None for a build
    added_shards: int | None  # an update: shards added
    record: dict = field(repr=False)


@dataclass(frozen=True)
class KnnResult:
    graph: Path
    images: int
    k: int
