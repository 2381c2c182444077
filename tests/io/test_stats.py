"""Quality signals (pipeline/io/stats.py): brute-force reference, blur, black, grey and colourful images, loader."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter

from pipeline.extract.loader import ExtractDataset
from pipeline.extract.preprocess import Preprocess
from pipeline.io.stats import FLAT_LEVEL, STATS_COLUMNS, STATS_DEFINITION, image_stats
from tests.conftest import jpeg_bytes


def textured(seed: int, size: tuple[int, int] = (224, 224)) -> Image.Image:
    """Seeded colour blocks plus fine noise: sharp edges and texture, some flat areas."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3)).repeat(16, 0).repeat(16, 1)[:h, :w]
    noise = rng.normal(0, 12, (h, w, 3)) * (rng.random((h, w, 1)) < 0.5)
    return Image.fromarray(np.clip(blocks + noise, 0, 255).astype(np.uint8))


def chw(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img.convert("RGB")).transpose(2, 0, 1))


def reference(x: np.ndarray, width: int, height: int) -> dict[str, float]:
    """The definitions of STATS_DEFINITION, written out plainly in float64 on 2-D arrays."""
    step = max(1, min(x.shape[1:]) // 112)
    rgb = x[:, ::step, ::step].astype(np.float64)
    r, g, b = rgb
    grey = 0.299 * r + 0.587 * g + 0.114 * b
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    windows = sliding_window_view(grey, (3, 3))
    spread = windows.max(axis=(2, 3)) - windows.min(axis=(2, 3))
    rg, yb = r - g, (r + g) / 2 - b
    return {"sharpness": lap.var(), "brightness": grey.mean() / 255, "contrast": grey.std() / 255,
            "colorfulness": np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2),
            "aspect": width / height, "flat_share": (spread <= FLAT_LEVEL).mean()}


def stats(img: Image.Image, width: int = 640, height: int = 480) -> dict[str, float]:
    return dict(zip(STATS_COLUMNS, image_stats(chw(img), width, height)))


@pytest.mark.parametrize("seed,size", [(0, (224, 224)), (1, (308, 224)), (2, (224, 168)), (3, (518, 518)),
                                       (4, (60, 40))])
def test_every_signal_equals_the_brute_force_reference(seed, size):
    img = textured(seed, size)
    if seed == 2:  # large flat areas too
        arr = np.asarray(img).copy()
        arr[:80] = 128
        img = Image.fromarray(arr)
    got = stats(img, 1000 + seed, 750)
    want = reference(chw(img), 1000 + seed, 750)
    assert list(got) == list(STATS_COLUMNS) == list(want)
    for name in STATS_COLUMNS:
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), name
    if seed == 2:
        assert 0 < got["flat_share"] < 1


def test_the_working_copy_is_112_px_at_224_and_every_pixel_of_a_small_input():
    img = textured(5)
    sampled = Image.fromarray(np.asarray(img)[::2, ::2])
    assert stats(img)["sharpness"] == pytest.approx(reference(chw(sampled), 1, 1)["sharpness"], rel=1e-4)
    assert set(STATS_DEFINITION) == set(STATS_COLUMNS) | {"working_image"}
    view = np.asarray(img).transpose(2, 0, 1)  # a strided view, as the preprocessing may return for a same-size image
    assert not view.flags.c_contiguous and image_stats(view, 4, 3) == image_stats(chw(img), 4, 3)


def test_a_blurred_copy_is_less_sharp_than_its_original():
    for seed in range(3):
        img = textured(seed)
        blurred = [stats(img.filter(ImageFilter.GaussianBlur(r)))["sharpness"] for r in (1, 2, 4)]
        assert stats(img)["sharpness"] > blurred[0] > blurred[1] > blurred[2] > 0


def test_a_black_image_is_dark_flat_and_without_detail():
    s = stats(Image.new("RGB", (224, 224)), 300, 200)
    assert s == {"sharpness": 0.0, "brightness": 0.0, "contrast": 0.0, "colorfulness": 0.0, "aspect": 1.5,
                 "flat_share": 1.0}
    assert stats(Image.new("RGB", (224, 224), (255, 255, 255)))["brightness"] == pytest.approx(1.0, abs=1e-6)


def test_a_colourful_image_scores_above_its_grey_copy():
    img = textured(7)
    grey = img.convert("L").convert("RGB")
    colourful, flat_grey = stats(img), stats(grey)
    assert flat_grey["colorfulness"] == pytest.approx(0.0, abs=1e-4)  # R = G = B: rg = yb = 0
    assert colourful["colorfulness"] > 40
    red = stats(Image.new("RGB", (224, 224), (255, 0, 0)))["colorfulness"]
    assert red == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-5)  # sd 0, mean (rg, yb) = (255, 127.5)


def test_a_too_small_input_has_no_interior():
    s = dict(zip(STATS_COLUMNS, image_stats(np.zeros((3, 2, 9), np.uint8) + 40, 9, 2)))
    assert s["sharpness"] == 0.0 and s["flat_share"] == 1.0 and s["brightness"] == pytest.approx(40 / 255)


def test_the_loader_computes_them_on_the_models_input_only_when_asked():
    preprocess = Preprocess(input_size=(3, 224, 224), interpolation="bicubic", mean=(0.485, 0.456, 0.406),
                            std=(0.229, 0.224, 0.225), crop_pct=0.875, crop_mode="center", resize_mode="fixed",
                            patch_size=14)
    black = jpeg_bytes(Image.new("RGB", (400, 300)))
    photo = jpeg_bytes(textured(3, (400, 300)), quality=95)
    with_stats = ExtractDataset([], preprocess, 4, 10**8, stats=True)
    tensor, meta = with_stats.process("s", 0, "k", black)
    dark = dict(zip(STATS_COLUMNS, meta.stats))
    assert dark["brightness"] < 0.01 and dark["flat_share"] == 1.0 and dark["aspect"] == pytest.approx(4 / 3)
    tensor, meta = with_stats.process("s", 1, "k", photo)
    assert meta.stats == image_stats(tensor.numpy(), 400, 300)
    assert ExtractDataset([], preprocess, 4, 10**8).process("s", 1, "k", photo)[1].stats == ()
