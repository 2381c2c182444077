"""What the report stage returns: counts and paths as attributes, the JSON record in `record`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ReportResult:
    """A report: index.html, its pages, plots and thumbs/, and report.json (written from `record`)."""

    page: Path  # report/index.html
    sections: list[str]
    pages: int
    thumbnails: int
    unavailable: dict[str, int]  # images that could not be shown, by reason
    seconds: float
    record: dict = field(repr=False)


@dataclass(frozen=True)
class PcaResult:
    """The PCA picture: one PNG per image and pca.json (written from `record`) in `out`."""

    out: Path
    written: list[Path]  # the PNGs
    grid: tuple[int, int]  # patches per image, rows × columns
    explained_variance_ratio: list[float]
    failures: dict[str, str]  # images skipped, with why
    seconds: float
    record: dict = field(repr=False)
