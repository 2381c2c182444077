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


def test_the_tensor_resize_is_pils_within_two_levels_in_both_modes():
    """The loader resizes uint8 tensors (torchvision v2, ~3× faster than PIL here); fixed mode keeps timm's own
    sizes and crop offsets, dynamic mode the aspect-preserving patch multiple; pixels stay within 2 levels of
    PIL's bicubic and almost all equal."""
    from pipeline.extract.preprocess import Preprocess

    photo = Image.fromarray((np.random.default_rng(3).random((6, 9, 3)) * 255).astype(np.uint8)).resize(
        (513, 342), Image.Resampling.BICUBIC)
    kw = dict(interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3, crop_mode="center")
    fixed = Preprocess(input_size=(3, 224, 224), crop_pct=0.875, **kw)
    assert fixed._tensor_steps is not None
    got = fixed(photo)
    pil = fixed._steps  # timm's PIL steps, the reference
    ref = photo
    for step in pil:
        ref = step(ref)
    ref = np.asarray(ref).transpose(2, 0, 1).astype(int)
    diff = np.abs(got.numpy().astype(int) - ref)
    assert got.shape == (3, 224, 224) and diff.max() <= 2 and diff.mean() < 0.05
    assert torch.stack([got, got]).is_contiguous()  # a view per image; the batch is written NCHW
    dynamic = Preprocess(input_size=(3, 224, 224), crop_pct=1.0, resize_mode="dynamic", patch_size=14, **kw)
    got = dynamic(photo)
    w, h = dynamic.output_size(513, 342)
    assert (w, h) == (224, 154) and got.shape == (3, h, w)
    ref = np.asarray(photo.resize((w, h), Image.Resampling.BICUBIC)).transpose(2, 0, 1).astype(int)
    diff = np.abs(got.numpy().astype(int) - ref)
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_an_interpolation_without_a_tensor_twin_keeps_the_pil_path():
    from pipeline.extract.preprocess import Preprocess

    pre = Preprocess(input_size=(3, 56, 56), interpolation="lanczos", mean=(0.5,) * 3, std=(0.5,) * 3,
                     crop_pct=0.875, crop_mode="center")
    img = make_image(1, (90, 70))
    assert pre._tensor_steps is None
    ref = img
    for step in pre._steps:
        ref = step(ref)
    assert np.array_equal(pre(img).numpy(), np.asarray(ref).transpose(2, 0, 1))
