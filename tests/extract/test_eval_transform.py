"""The default global-feature transform is DINOv2's evaluation one: resize the short side to 256 (bicubic),
centre crop 224; the model's native size is one option away (issue 13)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pipeline.extract.backbone import create_backbone
from pipeline.extract.config import EVAL_CROP_PCT, ExtractConfig, parse_resolution
from tests.conftest import TINY_KWARGS, TINY_MODEL, make_image


def config(**kw) -> ExtractConfig:
    return ExtractConfig(out="unused", images="unused", model=TINY_MODEL, model_kwargs=TINY_KWARGS,
                         weights="random", device="cpu", **kw)


def test_default_is_224_with_the_resize_256_centre_crop():
    cfg = config()
    assert cfg.resolution == 224 and EVAL_CROP_PCT == 224 / 256
    pre = create_backbone(cfg, torch.device("cpu")).preprocess
    assert pre.input_size == (3, 224, 224) and pre.crop_pct == 0.875 and pre.interpolation == "bicubic"
    img = make_image(3, (400, 300))
    got = pre(img)
    # reference: PIL bicubic resize of the short side to 256, then the centre 224×224
    w, h = 400, 300
    nw, nh = round(w * 256 / h), 256
    ref = np.asarray(img.resize((nw, nh), Image.Resampling.BICUBIC))
    top, left = round((nh - 224) / 2), round((nw - 224) / 2)
    ref = ref[top:top + 224, left:left + 224].transpose(2, 0, 1)
    assert got.shape == (3, 224, 224) and got.dtype == torch.uint8
    assert np.abs(got.numpy().astype(int) - ref.astype(int)).max() <= 1  # torchvision vs PIL rounding


def test_native_size_keeps_the_models_own_transform():
    pre = create_backbone(config(resolution=None), torch.device("cpu")).preprocess
    assert pre.input_size == (3, 518, 518) and pre.crop_pct == 1.0
    assert parse_resolution("native") is None and parse_resolution("448") == 448


def test_crop_pct_can_be_set():
    pre = create_backbone(config(resolution=56, crop_pct=1.0), torch.device("cpu")).preprocess
    assert pre.crop_pct == 1.0 and pre.needed_size(200, 100) in ((112, 56), (113, 57))  # ceil of 200·0.56
    assert config(resolution=56).crop_pct is None and create_backbone(
        config(resolution=56), torch.device("cpu")).preprocess.needed_size(200, 100) in ((128, 64), (129, 65))
