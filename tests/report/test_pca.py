"""The DINOv2 patch-PCA picture: shape, determinism, the foreground mask, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.report.pca import PcaConfig, run_pca
from tests.conftest import TINY_KWARGS, TINY_MODEL


def object_on_flat_background(i: int, size: int = 112) -> Image.Image:
    rng = np.random.default_rng(i)
    arr = np.full((size, size, 3), 128, np.uint8)
    a, b = size // 4, 3 * size // 4
    arr[a:b, a:b] = rng.integers(0, 256, (b - a, b - a, 3))
    return Image.fromarray(arr)


def test_pca_picture_shape_determinism_and_mask(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for i in range(3):
        object_on_flat_background(i).save(tmp_path / "in" / ("sub" if i == 2 else "") / f"obj{i}.png")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"not an image at all")
    cfg = dict(images=str(tmp_path / "in"), weights="random", model=TINY_MODEL, model_kwargs=TINY_KWARGS,
               resolution=112, device="cpu")
    record = run_pca(PcaConfig(out=str(tmp_path / "a"), **cfg)).record
    assert record["grid"] == [8, 8] and list(record["failures"]) == ["bad.jpg"]
    assert record["images"] == ["obj0.png", "obj1.png", "sub/obj2.png"]
    again = run_pca(PcaConfig(out=str(tmp_path / "b"), **cfg)).record
    for rel in record["images"]:
        a = np.asarray(Image.open(tmp_path / "a" / f"{rel}.png"))
        assert a.shape == (112, 3 * 112, 3)  # input | PCA RGB | mask, each at the model's input size
        np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b" / f"{rel}.png")))
        mask = a[7::14, 2 * 112 + 7::14, 0] > 127  # one pixel per patch
        # even random weights split flat patches from textured ones here (their inputs differ that much);
        # a pretrained DINOv2 separates objects from cluttered backgrounds, which random weights cannot
        inside = np.zeros((8, 8), bool)
        inside[2:6, 2:6] = True
        assert (mask == inside).mean() >= 0.9
    assert again["explained_variance_ratio"] == record["explained_variance_ratio"]
    fg = run_pca(PcaConfig(out=str(tmp_path / "c"), colours="foreground", **cfg)).record
    picture = np.asarray(Image.open(tmp_path / "c" / "obj0.png.png"))
    assert not picture[:14, 112:2 * 112].any() and fg["foreground_fraction"] == record["foreground_fraction"]


def test_pca_cli(tmp_path, capsys):
    from jobs.pca import main

    (tmp_path / "in").mkdir()
    object_on_flat_background(0, 56).save(tmp_path / "in" / "a.png")
    with pytest.raises(SystemExit) as exit_:
        main(["--images", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--weights", "random",
              "--model", TINY_MODEL, "--model-kwargs", ",".join(f"{k}={v}" for k, v in TINY_KWARGS),
              "--resolution", "56", "--device", "cpu", "--log-level", "WARNING"])
    assert exit_.value.code == 0 and "pca: 1 images, 4×4 patches each" in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "a.png.png").size == (3 * 56, 56)
    assert json.loads((tmp_path / "out" / "pca.json").read_text())["weights"]["source"] == "random"
