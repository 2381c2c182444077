"""The naive per-image timm loop against `make extract` eager and with `--compile auto`, on the same photos."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from pipeline.bench.throughput import naive_loop
from pipeline.extract.config import ExtractConfig
from pipeline.extract.runner import run_extract

log = logging.getLogger(__name__)

CACHE_VARIABLES = ("DINOCURATE_CACHE", "TORCHINDUCTOR_CACHE_DIR")


def photo_links(files: list[Path], count: int, folder: Path) -> Path:
    """`count` photos in `folder`, links to `files` taken in turn (again from the first when there are fewer):
    the same decode and forward work per image as distinct photos."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        source = files[i % len(files)]
        link = folder / f"{i:06d}_{source.name}"
        if not link.exists():
            link.symlink_to(source.resolve())
    return folder


@contextmanager
def fresh_compile_cache(path: Path):
    """Compiled graphs and the compile ledger in `path` for the block (a cold cache at first), the user's own
    settings back after it."""
    saved = {name: os.environ.get(name) for name in CACHE_VARIABLES}
    os.environ["DINOCURATE_CACHE"] = str(path)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def timed_extract(cfg: ExtractConfig) -> dict:
    """One `run_extract` into a new folder; images/s over the wall of the whole call (model set-up, workers'
    start and any compile included), beside the run's own figures."""
    with tempfile.TemporaryDirectory(prefix="versus-") as out:
        t0 = time.perf_counter()
        stats = run_extract(replace(cfg, out=str(Path(out) / "out")))
        wall = time.perf_counter() - t0
    return {"images": stats.images, "failures": stats.failures, "wall_seconds": wall,
            "images_per_second": stats.images / wall, "compiled": stats.compiled,
            "compile_seconds": stats.compile_seconds, "compile_why": stats.compile_why}


def versus_naive(files: list[Path], count: int, work: Path, model: str, weights: str,
                 model_kwargs: tuple, resolution: int, device: str, workers: int | None) -> dict:
    """On `count` photos, in this order: the naive loop (fp32, one image at a time, as a model card shows);
    `make extract` with its defaults and `--compile off`; with its defaults (`--compile auto`) on a cold compile
    cache; `--compile on` when auto did not compile (which fills the cache); the defaults again, now warm.
    Ratios are over the naive loop; every figure includes start-up."""
    folder = photo_links(files, count, work / f"versus-{count}")
    links = sorted(folder.iterdir())
    cfg = ExtractConfig(out="unused", images=str(folder), model=model, weights=weights, model_kwargs=model_kwargs,
                        resolution=resolution, device=device, workers=workers, progress=False)
    t0 = time.perf_counter()
    naive = naive_loop(model, links, resolution, cfg)
    naive["wall_seconds"] = time.perf_counter() - t0
    naive["images_per_second"] = len(links) / naive["wall_seconds"]
    runs = {"naive": naive, "eager": timed_extract(replace(cfg, compile="off"))}
    with tempfile.TemporaryDirectory(prefix="compile-cache-") as cache, fresh_compile_cache(Path(cache)):
        runs["auto_cold"] = timed_extract(cfg)
        if not runs["auto_cold"]["compiled"]:
            runs["on_cold"] = timed_extract(replace(cfg, compile="on"))
        runs["auto_warm"] = timed_extract(cfg)
    base = naive["images_per_second"]
    return {"photos": count, "distinct_photos": min(count, len(files)), "runs": runs,
            "ratios_over_naive": {name: run["images_per_second"] / base for name, run in runs.items()}}


def format_versus(block: dict) -> list[str]:
    """The block as the report prints it: one line per run, images/s and × the naive loop."""
    lines = [f"naive loop vs make extract on {block['photos']} photos ({block['distinct_photos']} distinct), "
             f"wall time with start-up:"]
    for name, run in block["runs"].items():
        extra = ""
        if "compiled" in run:
            extra = (f"  compiled in {run['compile_seconds']:.0f} s" if run["compiled"] else "  eager") + \
                    (f" ({run['compile_why']})" if name.startswith("auto") else "")
        lines.append(f"  {name:<10} {run['images_per_second']:7.2f} images/s = "
                     f"{block['ratios_over_naive'][name]:.2f} x naive{extra}")
    return lines
