"""Dedup quality on real photos (../shared/data; skipped when absent), exact + perceptual stages only.

The tiny random-weight ViT turns the embedding stage off, so these measure the exact (sha1) and pHash
stages. Run with `-s` to see the numbers:

    .venv/bin/python -m pytest tests/dedup/test_quality.py -s
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.extract.runner import run_extract
from tests.conftest import shared_data, tiny_config

pytestmark = pytest.mark.real_data

N_ORIGINALS = 40
SEED = 0
EDITS = ("q50", "small", "crop", "text", "bright", "rot3", "mirror")
PEER_DISTANCE = 10  # imagededup's default max_distance_threshold for PHash


def _jpeg(img: Image.Image, path: Path, quality: int = 90) -> None:
    img.convert("RGB").save(path, format="JPEG", quality=quality)


def edited_copies(img: Image.Image, rng: np.random.Generator) -> dict[str, tuple[Image.Image, int]]:
    """Everyday edits of one photo → (image, JPEG quality it is saved at)."""
    w, h = img.size
    keep = rng.uniform(0.85, 0.90)  # centre crop keeping 85–90 % of each side
    cw, ch = round(w * keep), round(h * keep)
    left, top = (w - cw) // 2, (h - ch) // 2
    texted = img.copy()
    xy = (int(rng.integers(5, max(6, w // 3))), int(rng.integers(5, max(6, h - 30))))
    ImageDraw.Draw(texted).text(xy, f"(c) dinocurate {int(rng.integers(1000, 9999))}", fill=(255, 255, 255),
                                font_size=max(12, h // 12))
    return {
        "q50": (img, 50),
        "small": (img.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.LANCZOS), 90),
        "crop": (img.crop((left, top, left + cw, top + ch)), 90),
        "text": (texted, 90),
        "bright": (ImageEnhance.Brightness(img).enhance(1.3), 90),
        "rot3": (img.rotate(3, resample=Image.Resampling.BICUBIC, expand=False), 90),
        "mirror": (ImageOps.mirror(img), 90),
    }


def build_planted_set(src: Path, root: Path, n_originals: int = N_ORIGINALS, seed: int = SEED
                      ) -> dict[str, list[str]]:
    """Seeded: n originals (copied byte for byte) each with its edits, the other photos as distractors.

    Returns the ground truth: group name → file names (original first)."""
    files = sorted(src.glob("*.jpg"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    originals = [files[i] for i in sorted(order[:n_originals])]
    distractors = [files[i] for i in sorted(order[n_originals:])]
    root.mkdir(parents=True)
    groups: dict[str, list[str]] = {}
    for g, path in enumerate(originals):
        name = f"g{g:02d}"
        (root / f"{name}_orig.jpg").write_bytes(path.read_bytes())
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        groups[name] = [f"{name}_orig.jpg"]
        for edit, (copy, quality) in edited_copies(img, rng).items():
            _jpeg(copy, root / f"{name}_{edit}.jpg", quality)
            groups[name].append(f"{name}_{edit}.jpg")
    for k, path in enumerate(distractors):
        (root / f"d{k:02d}.jpg").write_bytes(path.read_bytes())
    return groups


def pairs_of(groups) -> set[tuple[str, str]]:
    """Every unordered pair of members that share a group."""
    return {tuple(sorted(p)) for members in groups for p in itertools.combinations(members, 2)}


def component_pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
    return pairs_of(list(g.key) for _, g in df.groupby("component"))


def precision_recall(predicted: set, true: set) -> tuple[float, float]:
    hit = len(predicted & true)
    return (hit / len(predicted) if predicted else 1.0), (hit / len(true) if true else 1.0)


def extract_and_dedup(images: Path, out: Path) -> tuple[pd.DataFrame, dict]:
    run_extract(tiny_config(out, images=str(images)))
    summary = run_dedup(DedupConfig(features=str(out), progress=False))
    assert summary.record["stages"]["embedding"].get("skipped") == "random weights"
    return pd.read_parquet(out / "dedup" / "groups.parquet"), summary


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    src = shared_data("unsplash_coenm")
    tmp = tmp_path_factory.mktemp("planted")
    groups = build_planted_set(src, tmp / "images")
    df, summary = extract_and_dedup(tmp / "images", tmp / "out")
    return tmp / "images", groups, df, summary


def test_planted_edits_precision_and_recall_beat_imagehash_phash(planted):
    import imagehash

    root, groups, df, summary = planted
    files = sorted(p.name for p in root.iterdir())
    assert len(files) == 97 + N_ORIGINALS * len(EDITS) and sorted(df.key) == files  # every file decoded
    true = pairs_of(groups.values())
    assert len(true) == N_ORIGINALS * (len(EDITS) + 1) * len(EDITS) // 2

    ours_p, ours_r = precision_recall(component_pairs(df), true)
    hashes = {f: imagehash.phash(Image.open(root / f)) for f in files}
    peer = {(a, b) for a, b in itertools.combinations(files, 2) if hashes[a] - hashes[b] <= PEER_DISTANCE}
    peer_p, peer_r = precision_recall(peer, true)

    component = df.set_index("key").component
    print(f"\nplanted set: {N_ORIGINALS} originals x {len(EDITS)} edits + {97 - N_ORIGINALS} distractors "
          f"= {len(files)} files, {len(true)} true pairs (seed {SEED})")
    ours_name = f"ours (exact + pHash <= {summary.record['stages']['phash']['distance']}, mirror-aware, components)"
    peer_name = f"peer (imagehash.phash <= {PEER_DISTANCE}, direct pairs)"
    print(f"  {ours_name:58s} precision {ours_p:.3f}  recall {ours_r:.3f}  ({len(component_pairs(df))} pairs)")
    print(f"  {peer_name:58s} precision {peer_p:.3f}  recall {peer_r:.3f}  ({len(peer)} pairs)")
    print("  edit found with its original (ours: same component; peer: within distance):")
    for edit in EDITS:
        ours_hit = sum(component[f"{g}_orig.jpg"] == component[f"{g}_{edit}.jpg"] for g in groups)
        peer_hit = sum(hashes[f"{g}_orig.jpg"] - hashes[f"{g}_{edit}.jpg"] <= PEER_DISTANCE for g in groups)
        print(f"    {edit:7s} ours {ours_hit:2d}/{len(groups)}  peer {peer_hit:2d}/{len(groups)}")

    assert ours_p >= 0.95
    assert ours_r > peer_r
    # mirror-aware: every left-right mirror is grouped with its original (plain pHash finds none of them)
    assert all(component[f"{g}_orig.jpg"] == component[f"{g}_mirror.jpg"] for g in groups)


@pytest.mark.parametrize("folder", ["jenssegers_imagehash", "imagededup_tests", "pdq_threatexchange"])
def test_byte_identical_files_share_a_component(folder, tmp_path):
    root = shared_data(folder)
    df, summary = extract_and_dedup(root, tmp_path / "out")
    by_sha1: dict[bytes, list[str]] = {}
    for key in sorted(df.key):  # every decoded image (corrupt files are failure rows, text files not listed)
        by_sha1.setdefault(hashlib.sha1((root / key).read_bytes()).digest(), []).append(key)
    identical = [keys for keys in by_sha1.values() if len(keys) > 1]
    assert identical, f"{folder} has byte-identical files"
    rows = df.set_index("key")
    for keys in identical:
        assert rows.loc[keys, "component"].nunique() == 1, keys
        assert set(rows.loc[keys, "reason"]) <= {"exact", "keep"}
    assert summary.record["stages"]["exact"]["edges"] == sum(len(k) - 1 for k in identical)


def test_distinct_photos_never_share_a_component(tmp_path):
    root = shared_data("unsplash_coenm")
    df, summary = extract_and_dedup(root, tmp_path / "out")
    assert sorted(df.key) == sorted(p.name for p in root.glob("*.jpg"))
    assert (df.component_size == 1).all(), df[df.component_size > 1][["key", "component", "reason"]]
    assert summary.record["stages"]["exact"]["edges"] == 0 and summary.record["stages"]["phash"]["edges"] == 0
    assert summary.record["groups"] == 0 and df.keep.all()
