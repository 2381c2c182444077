"""Extraction on real photos from ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from pipeline.extract.pack import pack_folder
from pipeline.extract.runner import run_extract
from tests.conftest import shared_data, tiny_config

pytestmark = pytest.mark.real_data


def test_imagededup_folder_one_row_per_decodable_file_and_two_corrupt_failures(tmp_path):
    root = shared_data("imagededup_tests")
    with open(root / "groups.csv") as f:
        listed = [row["file"] for row in csv.DictReader(f)]
    corrupt = sorted(f for f in listed if "_corrupt" in f)
    assert len(corrupt) == 2 and len(listed) == 34
    stats = run_extract(tiny_config(tmp_path / "out", images=str(root), workers=1))
    rows = pd.read_parquet(tmp_path / "out" / "features")
    fails = pd.read_parquet(tmp_path / "out" / "failures")
    assert sorted(rows.key) == sorted(set(listed) - set(corrupt))  # .svg-named JPEG, gif, pbm, tiff... all in
    assert sorted(fails.key) == corrupt and set(fails.stage) == {"decode"}
    assert stats.images == 32 and stats.failures == 2
    by_key = rows.set_index("key")
    # the same JPEG bytes behind .bmp/.png/.svg names: same sha1, same features
    same = ["formats_images/ukbench09380.jpeg", "formats_images/ukbench09380.bmp",
            "formats_images/ukbench09380.png", "formats_images/ukbench09380.svg"]
    assert len({bytes(by_key.loc[k, "sha1"]) for k in same}) == 1
    cls = np.stack([by_key.loc[k, "cls"] for k in same]).astype(np.float32)
    np.testing.assert_array_equal(cls, np.repeat(cls[:1], 4, axis=0))


def test_exif_orientations_are_honoured(tmp_path):
    """The four exif-rotn photos (orientation 1/3/6/8) come out upright: sizes and pixels as EXIF says.

    ../shared/data/README calls them one photo; they are four upright shots (6 and 8 are portrait, see the
    closing note of issue 2), so the check is against ImageOps.exif_transpose, not against each other.
    """
    import torch
    from PIL import Image, ImageOps
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, PILToTensor, Resize

    from pipeline.extract.backbone import create_backbone

    root = shared_data("pdq_threatexchange", "reg-test-input", "exif-rotn")
    # the whole image (crop 1.0): an ignored rotation then changes the features enough to see
    cfg = tiny_config(tmp_path / "out", images=str(root), dtype="float32", jpeg_draft=False, crop_pct=1.0)
    run_extract(cfg)
    rows = pd.read_parquet(tmp_path / "out" / "features").set_index("key").sort_index()
    names = [f"exif-rotn-{o}.jpg" for o in (1, 3, 6, 8)]
    assert list(rows.index) == names
    assert list(zip(rows.width, rows.height)) == [(4032, 3024), (4032, 3024), (3024, 4032), (3024, 4032)]
    backbone = create_backbone(cfg, torch.device("cpu"))
    to_input = Compose([Resize(56, InterpolationMode.BICUBIC), CenterCrop(56), PILToTensor()])

    def cls_of(img: Image.Image) -> np.ndarray:
        out = backbone(to_input(img.convert("RGB"))[None])["cls"][0].numpy().astype(np.float64)
        return out / np.linalg.norm(out)

    for name in names:
        got = np.asarray(rows.loc[name, "cls"], np.float64)
        got /= np.linalg.norm(got)
        with Image.open(root / name) as raw:
            upright = cls_of(ImageOps.exif_transpose(raw))
            ignored = cls_of(raw)
        assert got @ upright > 0.9999, name
        if not name.endswith("-1.jpg"):
            assert got @ ignored < got @ upright - 1e-3, f"{name}: orientation not applied"


def test_packed_folder_gives_the_same_features_as_the_folder(tmp_path):
    root = shared_data("jenssegers_imagehash")
    shards = pack_folder(str(root), str(tmp_path / "shards"), shard_size=10, progress=False)
    run_extract(tiny_config(tmp_path / "from_shards", shards=(str(tmp_path / "shards" / "shards.txt"),)))
    run_extract(tiny_config(tmp_path / "from_folder", images=str(root), folder_shard_size=10))
    a = pd.read_parquet(tmp_path / "from_shards" / "features")
    b = pd.read_parquet(tmp_path / "from_folder" / "features")
    assert len(shards) == 3 and len(a) == len(b) == 27
    a = a.assign(sha=a.sha1.map(bytes)).set_index("sha").sort_index()
    b = b.assign(sha=b.sha1.map(bytes)).set_index("sha").sort_index()
    np.testing.assert_array_equal(np.stack(a.cls.to_numpy()), np.stack(b.cls.to_numpy()))
    assert list(a.phash) == list(b.phash)


def test_curate_on_copydays_pool_selects_each_seeds_exact_copies(tmp_path):
    import hashlib
    import shutil

    from pipeline.curate.retrieval import CurateConfig, run_curate

    root = shared_data("pimmi_copydays_like", "dataset1")
    files = sorted(p for p in root.rglob("*.jpg"))
    by_sha: dict[str, list] = {}
    for p in files:
        by_sha.setdefault(hashlib.sha1(p.read_bytes()).hexdigest(), []).append(p)
    copy_sets = [v for v in by_sha.values() if len(v) > 1]
    assert len(copy_sets) >= 5
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    chosen = copy_sets[:5]
    for i, group in enumerate(chosen):
        shutil.copy2(group[0], seeds / f"seed{i}.jpg")  # a copy in tmp, outside the repo
    run_extract(tiny_config(tmp_path / "pool", images=str(root), workers=1, batch_size=32))
    run_extract(tiny_config(tmp_path / "seeds_out", images=str(seeds)))
    k = max(len(g) for g in chosen)
    summary = run_curate(CurateConfig(pool=str(tmp_path / "pool"), queries=(("seeds", str(tmp_path / "seeds_out")),),
                                      mode="sample", k=k, progress=False))
    selected = set(pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet").key)
    for group in chosen:
        copies = {p.relative_to(root).as_posix() for p in group}
        assert copies <= selected, f"missing exact copies {copies - selected}"
    assert summary.record["sources"]["seeds"]["queries"] == 5
