"""The demo: a few photos packed into shards, their features extracted, and how to read them; offline.

The photos are ../shared/data/pkgimages when present, else 12 made in code from the sample photos that
matplotlib (a dependency) ships: each photo and its mirrored, cropped, rotated, greyed and recompressed copies,
so the demo needs no network and its copies give `make dedup` something to find. Without weights in the
Hugging Face cache the demo runs with random weights, says so loudly, and every output records it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from pipeline.errors import WeightsError
from pipeline.extract.config import DemoConfig, ExtractConfig
from pipeline.io.tables import make_folder
from pipeline.layout import OutputRoot

if TYPE_CHECKING:  # the runner loads torch: imported where the demo runs, so that `demo --help` stays quick
    from pipeline.extract.runner import ExtractStats

log = logging.getLogger(__name__)

SHARED_PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "pkgimages"
SAMPLE_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")  # in matplotlib's mpl-data/sample_data
# name → how the copy is made from its photo (an RGB image)
VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "original": lambda im: im,
    "mirrored": ImageOps.mirror,
    "cropped": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "rotated": lambda im: im.rotate(90, expand=True),
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "small": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BICUBIC),
}

READ_HINT = """
read them with pandas:
  import numpy as np, pandas as pd
  df = pd.read_parquet("{out}/features")          # one row per image: key, shard, index, width, height,
  X = np.stack(df.cls.to_numpy()).astype("float32") # sha1, phash, cls, patch_mean
  print(df[["key", "width", "height"]].head(), X.shape)
  pd.read_parquet("{out}/failures")                  # images that could not be used, with the reason
provenance (model, weights, preprocessing): {config}
"""


@dataclass(frozen=True)
class DemoResult:
    photos: Path
    shards: list[str]
    weights: str
    features: Path  # the extract output root
    stats: ExtractStats


def find_photos(work: Path) -> Path:
    """../shared/data/pkgimages when present; otherwise `work/photos`, made once from matplotlib's samples."""
    if SHARED_PHOTOS.is_dir():
        log.info("using the sample photos in %s", SHARED_PHOTOS)
        return SHARED_PHOTOS
    target = work / "photos"
    if target.is_dir() and any(target.iterdir()):
        return target
    return make_photos(target)


def make_photos(target: Path) -> Path:
    """Write `len(SAMPLE_PHOTOS) * len(VARIANTS)` JPEGs into `target` (complete or absent: written beside it,
    then renamed) from the sample photos matplotlib ships: no network needed."""
    import matplotlib

    samples = Path(matplotlib.get_data_path()) / "sample_data"
    part = target.with_name(target.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    for name in SAMPLE_PHOTOS:
        with Image.open(samples / name) as im:
            rgba = im.convert("RGBA")
        photo = Image.new("RGB", rgba.size, "white")
        photo.paste(rgba, mask=rgba.getchannel("A"))  # transparent parts on white, as a viewer shows them
        for variant, make in VARIANTS.items():
            make(photo).save(part / f"{Path(name).stem}-{variant}.jpg", quality=90 if variant != "small" else 40)
    shutil.rmtree(target, ignore_errors=True)  # an empty folder left by hand
    os.replace(part, target)
    log.info("made %d demo photos in %s from matplotlib's sample photos", len(SAMPLE_PHOTOS) * len(VARIANTS),
             target)
    return target


def packed_before(photos: Path, shards: Path) -> list[str] | None:
    """The shards an earlier demo packed from these photos (none newer than the shard list), or None: a rerun
    reuses them, so that extract finds its shards done instead of redoing them for new tar files."""
    listing = shards / "shards.txt"
    if not listing.is_file():
        return None
    paths = [str(shards / name) for name in listing.read_text().split()]
    made = listing.stat().st_mtime
    if not paths or not all(os.path.isfile(p) for p in paths):
        return None
    if any(f.stat().st_mtime > made for f in photos.rglob("*") if f.is_file()):
        return None
    log.info("reusing the %d shards in %s (packed before from %s; delete them to repack)", len(paths), shards, photos)
    return paths


def pick_weights(model: str, asked: str | None) -> str:
    """What the user asked for; else the hub cache; else random weights, announced (a dry run)."""
    if asked:
        return asked
    from pipeline.extract.weights import resolve_weights

    try:
        resolve_weights(model, "hub")
        return "hub"
    except WeightsError:
        log.warning("=" * 78)
        log.warning("no %s weights in the Hugging Face cache: this demo runs with RANDOM weights", model)
        log.warning("(a dry run of the pipeline; every output records weights=random). For real features:")
        log.warning("  make demo ARGS='--weights /path/to/dinov2_vits14_reg4_pretrain.pth'")
        log.warning("=" * 78)
        return "random"


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Photos → `OUT/shards` (10 per shard) → `OUT/features-<hub|random|file>`."""
    from pipeline.extract.pack import pack_folder
    from pipeline.extract.runner import run_extract

    work = make_folder(cfg.out, "demo folder")  # a file in the way is one line, before any photo is made
    photos = find_photos(work)
    shards = packed_before(photos, work / "shards") or pack_folder(str(photos), str(work / "shards"), shard_size=10,
                                                                   prefix="demo", progress=cfg.progress)
    weights = pick_weights(cfg.model, cfg.weights)
    out = work / f"features-{weights if weights in ('hub', 'random') else 'file'}"
    stats = run_extract(ExtractConfig(out=str(out), shards=(str(work / "shards" / "shards.txt"),), model=cfg.model,
                                      weights=weights, resolution=cfg.resolution, progress=cfg.progress))
    return DemoResult(photos, shards, weights, out, stats)


def format_demo(result: DemoResult) -> str:
    """What was made, where, and how to read it."""
    root = OutputRoot(result.features)
    return (f"\ndemo: {len(result.shards)} shards from {result.photos} -> {Path(result.shards[0]).parent}\n"
            f"demo: {result.stats.summary()}\n"
            f"features: {root.features}/*.parquet   failures: {root.failures}/   stats: {root.stats_path}\n"
            + READ_HINT.format(out=root.root, config=root.config_path))
