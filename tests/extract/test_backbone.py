"""The backbone (pipeline/extract/backbone.py): feature heads on device-normalised uint8 input, autocast."""

from __future__ import annotations

import torch

from pipeline.extract.backbone import create_backbone
from tests.conftest import TINY_RES, tiny_config


def test_extras_shapes_and_definitions(tmp_path):
    cfg = tiny_config(tmp_path, images=str(tmp_path), extras=("registers", "gem", "layers"), last_layers=2)
    backbone = create_backbone(cfg, torch.device("cpu"))
    x = torch.randint(0, 256, (2, 3, TINY_RES, TINY_RES), dtype=torch.uint8)
    out = backbone(x)
    assert sorted(out) == ["cls", "layers", "patch_gem", "patch_mean", "registers"]
    d = 64
    assert out["registers"].shape == (2, 4 * d) and out["layers"].shape == (2, 2 * d)
    xn = (x.float() - backbone.mean) / backbone.std
    with torch.no_grad():
        tokens = backbone.model.forward_features(xn)
    patches = tokens[:, 5:]
    torch.testing.assert_close(out["cls"], tokens[:, 0])
    torch.testing.assert_close(out["patch_mean"], patches.mean(1))
    torch.testing.assert_close(out["registers"], tokens[:, 1:5].flatten(1))
    torch.testing.assert_close(out["patch_gem"], patches.clamp(min=1e-6).pow(3).mean(1).pow(1 / 3))
    torch.testing.assert_close(out["layers"][:, d:], tokens[:, 0], atol=1e-5, rtol=1e-5)  # last block = final


def test_bf16_autocast_on_cpu_stays_close_to_fp32(tmp_path):
    x = torch.randint(0, 256, (2, 3, TINY_RES, TINY_RES), generator=torch.Generator().manual_seed(1),
                      dtype=torch.uint8)
    fp32 = create_backbone(tiny_config(tmp_path, images=str(tmp_path)), torch.device("cpu"))(x)["cls"]
    bf16 = create_backbone(tiny_config(tmp_path, images=str(tmp_path), precision="bf16"),
                           torch.device("cpu"))(x)["cls"]
    assert bf16.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(fp32, bf16)
    assert cos.min() > 0.99


def test_normalisation_in_place_is_the_same_arithmetic_and_leaves_the_input_alone(tmp_path):
    """The batch is normalised in place on one float copy: bit-equal to (x - mean) / std made out of place,
    and a caller's float batch is not changed."""
    backbone = create_backbone(tiny_config(tmp_path, images=str(tmp_path)), torch.device("cpu"))
    x = torch.randint(0, 256, (2, 3, TINY_RES, TINY_RES), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens = backbone.model.forward_features((x.float() - backbone.mean) / backbone.std)
    torch.testing.assert_close(backbone(x)["cls"], tokens[:, 0], rtol=0, atol=0)
    xf = x.float()
    kept = xf.clone()
    torch.testing.assert_close(backbone(xf)["cls"], tokens[:, 0], rtol=0, atol=0)
    assert torch.equal(xf, kept)
