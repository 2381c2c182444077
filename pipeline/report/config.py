"""Configuration of the report stage: the HTML report and the PCA picture, one frozen dataclass each."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.extract.config import DEFAULT_MODEL


@dataclass(frozen=True)
class ReportConfig:
    out: str  # an extract output root; its dedup/ and curate/ outputs are reported when present
    report: str | None = None  # default: OUT/report
    search: str | None = None  # a search result table (.parquet or .csv) over OUT's index
    search_queries: str | None = None  # where the search's query images are: an image, a folder or an OUT
    groups_per_page: int = 50
    max_groups: int = 2500  # the largest groups are shown; the rest are counted
    max_members: int = 24  # thumbnails shown per group
    search_max_queries: int = 50
    curate_samples: int = 12  # queries or clusters sampled per seed set
    curate_per_sample: int = 8
    quality_per_row: int = 8  # lowest and highest images shown per quality signal (--extras stats)
    max_failures: int = 200  # failing keys listed
    thumb_size: int = 128
    seed: int = 0


@dataclass(frozen=True)
class PcaConfig:
    images: str  # a folder of images (recursively, as extract reads it)
    out: str  # one PNG per image: input | PCA RGB | foreground mask
    model: str = DEFAULT_MODEL
    weights: str = "hub"
    model_kwargs: tuple[tuple[str, object], ...] = ()
    resolution: int | None = None  # default: the model's own (DINOv2: 518 px, a 37×37 patch grid)
    crop_pct: float = 1.0  # the whole image: the patch maps line up with the picture (extract's 0.875 crops)
    device: str = "auto"
    threshold: float = 0.0  # foreground: first component above this many standard deviations
    colours: str = "all"  # all: RGB = components 1-3 of the joint PCA; foreground: refit on foreground (paper)
    batch_size: int = 8
    max_images: int = 64

    def __post_init__(self) -> None:
        if self.colours not in ("all", "foreground"):
            raise ConfigError(f"colours must be all or foreground, got {self.colours!r}")
