"""The demo: a few real photos packed into shards, their features extracted, and how to read them.

The photos are ../shared/data/pkgimages when present, else the public-domain samples inside the
scikit-image wheel (downloaded with pip, never installed). Without weights in the Hugging Face cache the demo
runs with random weights, says so loudly, and every output records it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import WeightsError
from pipeline.extract.config import DEFAULT_MODEL, ExtractConfig
from pipeline.extract.runner import ExtractStats, run_extract
from pipeline.extract.weights import resolve_weights
from pipeline.io.pack import pack_folder
from pipeline.layout import OutputRoot

log = logging.getLogger(__name__)

SHARED_PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "pkgimages"
WHEEL = "scikit-image==0.26.0"
PHOTO_SUFFIXES = (".jpg", ".png")

READ_HINT = """
read them with pandas:
  import numpy as np, pandas as pd
  df = pd.read_parquet("{out}/features")          # one row per image: key, shard, index, width, height,
  X = np.stack(df.cls.to_numpy()).astype("float32") # sha1, phash, cls, patch_mean
  print(df[["key", "width", "height"]].head(), X.shape)
  pd.read_parquet("{out}/failures")                  # images that could not be used, with the reason
provenance (model, weights, preprocessing): {config}
"""


def default_demo_dir() -> str:
    """Where the demo writes unless told: the user's cache ($XDG_CACHE_HOME, else ~/.cache), never the current
    folder (nothing lands in the repository by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "dinocurate" / "demo")


@dataclass(frozen=True)
class DemoConfig:
    out: str = field(default_factory=default_demo_dir)  # demo folder: photos/, shards/, features-<weights>/
    model: str = DEFAULT_MODEL
    weights: str | None = None  # None: the hub cache if it has the model, else random weights (announced)
    resolution: int = 224  # small, for speed
    progress: bool = True


@dataclass
class DemoResult:
    photos: Path
    shards: list[str]
    weights: str
    features: Path  # the extract output root
    stats: ExtractStats


def find_photos(work: Path) -> Path:
    """../shared/data/pkgimages when present; otherwise the photos shipped in the scikit-image wheel."""
    if SHARED_PHOTOS.is_dir():
        log.info("using the sample photos in %s", SHARED_PHOTOS)
        return SHARED_PHOTOS
    target = work / "photos"
    if target.is_dir() and any(target.iterdir()):
        return target
    wheels = work / "wheel"
    log.info("downloading %s (only to take its sample photos out of the wheel)", WHEEL)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), WHEEL],
                   check=True)
    wheel = next(wheels.glob("scikit_image-*.whl"))
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("skimage/data/") and name.endswith(PHOTO_SUFFIXES) and name.count("/") == 2:
                (target / Path(name).name).write_bytes(zf.read(name))
    return target


def pick_weights(model: str, asked: str | None) -> str:
    """What the user asked for; else the hub cache; else random weights, announced (a dry run)."""
    if asked:
        return asked
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
    work = Path(cfg.out)
    photos = find_photos(work)
    shards = pack_folder(str(photos), str(work / "shards"), shard_size=10, prefix="demo", progress=cfg.progress)
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
