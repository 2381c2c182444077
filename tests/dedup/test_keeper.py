"""The keeper of a duplicate group is the copy a person would keep, with the reason it won."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.keeper import Candidate, rank
from pipeline.dedup.run import dedup_images
from pipeline.dedup.signals import LOSSLESS, read_signals
from tests.conftest import TINY_CLI_ARGS, shared_data, tiny_config
from tests.conftest import run_module as run

DAY = 86400.0


def photo_like(i: int, size: tuple[int, int] = (240, 180)) -> Image.Image:
    """A seeded colour picture with smooth shading, hard-edged shapes and fine texture (pHash-stable)."""
    rng = np.random.default_rng(1000 + i)
    w, h = size
    low = rng.uniform(0, 255, (4, 5, 3)).astype(np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        box = (x0, y0, x0 + int(rng.integers(20, 80)), y0 + int(rng.integers(20, 80)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    arr = np.asarray(img, np.float64) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def save_jpeg(img: Image.Image, path: Path, quality: int = 92, mtime: float | None = None, exif: bool = False) -> None:
    kw = {}
    if exif:
        e = Image.Exif()
        e[0x010F] = "Camera maker"
        kw["exif"] = e.tobytes()
    img.save(path, "JPEG", quality=quality, **kw)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def sig(**kw) -> Candidate:
    """A candidate with signals made by hand (defaults: a 100×100 colour JPEG q90 without EXIF)."""
    from pipeline.dedup.signals import ImageSignals

    base = dict(width=100, height=100, colour=True, sharpness=100.0, quality=90.0, format="JPEG", exif=False,
                sha1=kw.pop("sha1", os.urandom(20)))
    key, mtime = kw.pop("key"), kw.pop("mtime", None)
    base.update(kw)
    s = ImageSignals(**base)
    return Candidate(key, s, s.pixels, mtime)


# ---------------------------------------------------------------- the ranking, criterion by criterion
def test_each_criterion_decides_in_order_and_says_so():
    won, why = rank([sig(key="a", width=50), sig(key="bb")])
    assert won == 1 and why == "most pixels (100x100 against 50x100)"
    won, why = rank([sig(key="a", colour=False), sig(key="b"), sig(key="c", colour=False)])
    assert won == 1 and why == "colour (2 greyscale copies)"
    won, why = rank([sig(key="a", sharpness=10.0), sig(key="b", sharpness=100.0)])
    assert won == 1 and why == "sharper (detail 10.0x the blurrier copy)"
    won, why = rank([sig(key="a", quality=30.0), sig(key="b", quality=92.0)])
    assert won == 1 and why == "less compressed (JPEG quality ~92 against JPEG quality ~30)"
    won, why = rank([sig(key="a", exif=False), sig(key="b", exif=True)])
    assert won == 1 and why.startswith("has EXIF metadata")
    won, why = rank([sig(key="a", mtime=5 * DAY), sig(key="b", mtime=DAY)])
    assert won == 1 and why.startswith("modified earliest (")
    won, why = rank([sig(key="dir/a.jpg"), sig(key="a.jpg")])
    assert won == 1 and why == "shortest path"
    won, why = rank([sig(key="b.jpg"), sig(key="a.jpg")])
    assert won == 1 and why == "first by name"


def test_small_differences_do_not_outvote_a_later_large_one():
    # a JPEG q30 copy keeps 0.6-0.9 of the original's Laplacian variance: within SHARPNESS_SHARE, so the
    # compression decides; 3 quality points are within QUALITY_SLACK, so the next criterion decides
    won, why = rank([sig(key="a", sharpness=120.0, quality=30.0), sig(key="b", sharpness=100.0, quality=92.0)])
    assert won == 1 and why.startswith("less compressed")
    won, why = rank([sig(key="a", quality=92.0, mtime=3 * DAY), sig(key="b", quality=89.0, mtime=DAY)])
    assert won == 1 and why.startswith("modified earliest")
    # a lossless file is less compressed than any JPEG
    won, why = rank([sig(key="a", quality=80.0), sig(key="b", quality=LOSSLESS, format="PNG")])
    assert won == 1 and "lossless PNG" in why


def test_byte_identical_copies_go_to_the_path_rule_and_say_so():
    same = os.urandom(20)
    # the identical copy in the longer path was modified earlier: for the same bytes the path decides
    won, why = rank([sig(key="backup/old/x.jpg", sha1=same, mtime=DAY), sig(key="x.jpg", sha1=same, mtime=9 * DAY),
                     sig(key="a.jpg", quality=40.0)])
    assert won == 1 and why == "less compressed (JPEG quality ~90 against JPEG quality ~40); " \
                               "byte-identical to 1 other; shortest path"


def test_unreadable_or_changed_files_are_never_preferred():
    gone = Candidate("a.jpg", None, 10_000_000, None, "changed since extract")
    won, why = rank([gone, sig(key="b.jpg")])
    assert won == 1 and why == "the only file that could be checked (1 other: changed since extract)"
    won, why = rank([Candidate("b.jpg", None, 10, None, "gone"), Candidate("a.jpg", None, 10, None, "gone")])
    assert won == 1 and why.startswith("no file of the group could be read") and why.endswith("first by name")


def test_signals_of_encoded_files():
    img = photo_like(1)
    buf = io.BytesIO()
    for q in (30, 50, 75, 92):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        assert read_signals(buf.getvalue()).quality == q  # IJG tables: the estimate is exact
    png = io.BytesIO()
    img.save(png, "PNG")
    s = read_signals(png.getvalue())
    assert (s.quality, s.format, s.colour, s.exif, s.width, s.height) == (LOSSLESS, "PNG", True, False, 240, 180)
    grey = io.BytesIO()
    img.convert("L").convert("RGB").save(grey, "JPEG", quality=92)  # grey pixels stored as RGB
    assert not read_signals(grey.getvalue()).colour
    blurred = io.BytesIO()
    img.filter(ImageFilter.GaussianBlur(2)).save(blurred, "PNG")
    assert read_signals(blurred.getvalue()).sharpness < 0.5 * s.sharpness


# ---------------------------------------------------------------- a folder of originals and degraded copies
def planted_folder(folder: Path, originals: list[Image.Image]) -> dict[str, str]:
    """Each original with its greyscale, blurred (σ 2), JPEG q30, half-size and mirrored (later mtime) copies;
    the copies' names sort first, so key order favours them. Returns copy name → original name."""
    folder.mkdir(parents=True)
    truth = {}
    t0 = 1_600_000_000.0
    for n, img in enumerate(originals):
        orig = f"photo_{n:02d}_original.jpg"
        save_jpeg(img, folder / orig, 92, mtime=t0)
        copies = {
            f"a{n:02d}_grey.jpg": (img.convert("L"), 92),
            f"a{n:02d}_blur.jpg": (img.filter(ImageFilter.GaussianBlur(2)), 92),
            f"a{n:02d}_q30.jpg": (img, 30),
            f"a{n:02d}_half.jpg": (img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS), 92),
            f"a{n:02d}_mirror.jpg": (ImageOps.mirror(img), 92),
        }
        for name, (copy, q) in copies.items():
            save_jpeg(copy, folder / name, q, mtime=t0 + DAY)
            truth[name] = orig
    return truth


def check_keepers(groups: pd.DataFrame, truth: dict[str, str]) -> None:
    originals = set(truth.values())
    kept = groups[groups.keep & (groups.component_size > 1)]
    assert set(kept.key) == originals, kept[["key", "keep_reason"]]
    assert kept.keep_reason.notna().all() and (kept.keep_reason.str.len() > 0).all()
    by_key = groups.set_index("key")
    for copy, orig in truth.items():  # each copy sits in its original's group and is not kept
        assert by_key.loc[copy, "component"] == by_key.loc[orig, "component"], copy
        assert not by_key.loc[copy, "keep"] and pd.isna(by_key.loc[copy, "keep_reason"])


def test_the_original_is_kept_over_its_degraded_copies(tmp_path):
    truth = planted_folder(tmp_path / "photos", [photo_like(i) for i in range(3)])
    result = dedup_images(tiny_config(tmp_path / "out", images=str(tmp_path / "photos")),
                          DedupConfig(features="", progress=False))
    groups = pd.read_parquet(tmp_path / "out" / "dedup" / "groups.parquet")
    check_keepers(groups, truth)
    reasons = " | ".join(groups[groups.keep & (groups.component_size > 1)].keep_reason)
    for criterion in ("most pixels", "colour", "sharper", "less compressed", "modified earliest"):
        assert criterion in reasons
    assert result.dedup.record["keep"] == {"policy": "quality", "read": 18, "unreadable": 0}


def test_the_original_is_kept_through_the_command_line(tmp_path):
    truth = planted_folder(tmp_path / "photos", [photo_like(i) for i in range(2)])
    out = tmp_path / "out"
    run("jobs.dedup", "--images", str(tmp_path / "photos"), "--out", str(out), *TINY_CLI_ARGS)
    check_keepers(pd.read_parquet(out / "dedup" / "groups.parquet"), truth)
    with open(out / "duplicates.csv") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert {Path(r["duplicate"]).name: Path(r["kept"]).name for r in rows} == truth
    assert all(r["keep_reason"] for r in rows)


def test_real_photos_keep_the_original(tmp_path):
    photos = sorted(shared_data("unsplash_coenm").glob("*.jpg"))[:4]
    truth = planted_folder(tmp_path / "photos", [Image.open(p).convert("RGB") for p in photos])
    dedup_images(tiny_config(tmp_path / "out", images=str(tmp_path / "photos")),
                 DedupConfig(features="", progress=False))
    check_keepers(pd.read_parquet(tmp_path / "out" / "dedup" / "groups.parquet"), truth)


@pytest.mark.parametrize("policy", ["largest", "random"])
def test_other_policies_still_say_why(tmp_path, policy):
    truth = planted_folder(tmp_path / "photos", [photo_like(7)])
    dedup_images(tiny_config(tmp_path / "out", images=str(tmp_path / "photos")),
                 DedupConfig(features="", progress=False, keep=policy))
    groups = pd.read_parquet(tmp_path / "out" / "dedup" / "groups.parquet")
    kept = groups[groups.keep & (groups.component_size > 1)]
    assert len(kept) == 1 and len(truth) == 5
    assert kept.keep_reason.iloc[0] == ("tie on most pixels: first by name" if policy == "largest"
                                        else "seeded random pick (--keep random, seed 0)")


def test_exif_orientation_and_large_jpegs():
    img = photo_like(3, (300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90°: shown 200 wide, 300 high
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    s = read_signals(buf.getvalue())
    assert (s.width, s.height, s.exif) == (200, 300, True)
    # a large JPEG is decoded at a reduced DCT scale: its pixel count is the file's, its sharpness close to a
    # full decode's at the same working size
    big = photo_like(4, (1280, 960)).resize((2560, 1920), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    s = read_signals(buf.getvalue())
    from pipeline.dedup.signals import _sharpness

    full = _sharpness(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    assert s.pixels == 2560 * 1920 and abs(s.sharpness / full - 1) < 0.25
