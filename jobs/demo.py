"""`python -m jobs.demo`: pack a few real photos into shards, extract their features, show how to read them."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

from jobs._cli import run_job

log = logging.getLogger("demo")
REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "pkgimages"
# Public-domain sample photos inside the scikit-image wheel; the wheel is downloaded, never installed.
WHEEL = "scikit-image==0.26.0"
PHOTO_SUFFIXES = (".jpg", ".png")

READ_HINT = """
read them with pandas:
  import numpy as np, pandas as pd
  df = pd.read_parquet("{out}/features")          # one row per image: key, shard, index, width, height,
  X = np.stack(df.cls.to_numpy()).astype("float32") # sha1, phash, cls, patch_mean
  print(df[["key", "width", "height"]].head(), X.shape)
  pd.read_parquet("{out}/failures")                  # images that could not be used, with the reason
provenance (model, weights, preprocessing): {out}/config.json
"""


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
    from pipeline.errors import WeightsError
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


def main(argv: list[str] | None = None) -> None:
    from pipeline.extract.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__)
    p.add_argument("--out", default="demo_out", help="demo folder (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--weights", default=None,
                   help="hub, a weights file, or random (default: the hub cache if it has the model, else "
                        "random weights, announced and recorded)")
    p.add_argument("--resolution", type=int, default=224, help="input size (default: %(default)s, for speed)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.extract.config import ExtractConfig
        from pipeline.extract.runner import run_extract
        from pipeline.io.pack import pack_folder

        work = Path(args.out)
        photos = find_photos(work)
        shards = pack_folder(str(photos), str(work / "shards"), shard_size=10, prefix="demo")
        weights = pick_weights(args.model, args.weights)
        out = work / f"features-{weights if weights in ('hub', 'random') else 'file'}"
        stats = run_extract(ExtractConfig(out=str(out), shards=(str(work / "shards" / "shards.txt"),),
                                          model=args.model, weights=weights, resolution=args.resolution))
        print(f"\ndemo: {len(shards)} shards from {photos} -> {work / 'shards'}")
        print(f"demo: {stats.summary()}")
        print(f"features: {out}/features/*.parquet   failures: {out}/failures/   stats: {out}/stats.json")
        print(READ_HINT.format(out=out))
        return 1 if stats.failed else 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
