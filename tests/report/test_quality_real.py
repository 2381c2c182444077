"""Quality signals on real photos (../shared/data, skipped when absent): extract --extras stats, then the report."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from pipeline.extract.runner import run_extract
from pipeline.io.stats import STATS_COLUMNS
from pipeline.report.run import ReportConfig, run_report
from tests.conftest import shared_data, tiny_config
from tests.report.test_quality import parse

pytestmark = pytest.mark.real_data


def test_sixteen_photos_with_a_blurred_and_a_dark_copy(tmp_path):
    source = sorted(shared_data("unsplash_coenm").glob("*.jpg"))[:14]
    photos = tmp_path / "photos"  # copies in tmp, outside the repo
    photos.mkdir()
    for path in source:
        shutil.copy2(path, photos / path.name)
    with Image.open(source[0]) as original:
        original.filter(ImageFilter.GaussianBlur(3)).save(photos / "blurred.jpg", quality=95)
        ImageEnhance.Brightness(original).enhance(0.1).save(photos / "dark.jpg", quality=95)
    # at DINOv2's 224 px (working copy 112 px), where the signals are meant to be read
    run_extract(tiny_config(tmp_path / "out", images=str(photos), extras=("stats",), workers=1, resolution=224))
    feats = pd.read_parquet(tmp_path / "out" / "features").set_index("key")
    assert len(feats) == 16
    first = source[0].name
    assert feats.loc["blurred.jpg", "sharpness"] < 0.05 * feats.loc[first, "sharpness"]
    assert feats.loc["dark.jpg", "brightness"] < 0.2 * feats.loc[first, "brightness"]
    assert feats.loc["blurred.jpg", "aspect"] == pytest.approx(feats.loc[first, "aspect"])
    # the Laplacian's variance scales with contrast: the dark copy (x 0.1 brightness) is as flat as the blurred one
    assert set(feats.sharpness.nsmallest(2).index) == {"blurred.jpg", "dark.jpg"}
    assert feats.brightness.idxmin() == "dark.jpg"
    assert feats.loc["dark.jpg", "colorfulness"] < 0.2 * feats.loc[first, "colorfulness"]
    assert (feats.colorfulness >= 0).all() and feats.flat_share.between(0, 1).all()

    info = run_report(ReportConfig(out=str(tmp_path / "out"), quality_per_row=4)).record
    assert info["sections"][0] == "quality" and not info["unavailable"]
    rows = parse(tmp_path / "out" / "report" / "index.html")
    assert list(rows) == list(STATS_COLUMNS)
    assert all(len(rows[s]["lowest"]) == len(rows[s]["highest"]) == 4 for s in STATS_COLUMNS)
    assert {k for k, _ in rows["sharpness"]["lowest"][:2]} == {"blurred.jpg", "dark.jpg"}
    assert rows["brightness"]["lowest"][0][0] == "dark.jpg"
