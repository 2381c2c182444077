"""Weights (pipeline/extract/weights.py): a file, the original DINOv2 layout, the hub cache, or random."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.errors import WeightsError
from pipeline.extract.backbone import create_backbone
from pipeline.extract.weights import resolve_weights
from tests.conftest import TINY_KWARGS, TINY_MODEL, TINY_RES, tiny_config


def _tiny_model(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(TINY_MODEL, pretrained=False, img_size=TINY_RES, **dict(TINY_KWARGS)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(0.5)
    return model


def _original_dinov2_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm → facebookresearch/dinov2 keys: register_tokens, mask_token, pos_embed with a CLS position."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["register_tokens"] = sd.pop("reg_token")
    sd["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    sd["pos_embed"] = torch.cat([torch.zeros(1, 1, sd["pos_embed"].shape[-1]), sd["pos_embed"]], dim=1)
    return sd


def _features(tmp_path, weights: str) -> dict[str, np.ndarray]:
    cfg = tiny_config(tmp_path / "out", images=str(tmp_path), weights=weights)
    backbone = create_backbone(cfg, torch.device("cpu"))
    x = torch.randint(0, 256, (3, 3, TINY_RES, TINY_RES), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    return {k: v.numpy() for k, v in backbone(x).items()}, x


def _reference(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.forward_features((x.float() / 255 - mean) / std)[:, 0].numpy()


def test_safetensors_file_reproduces_the_model(tmp_path):
    model = _tiny_model()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    feats, x = _features(tmp_path, str(path))
    np.testing.assert_allclose(feats["cls"], _reference(model, x), atol=2e-5)


def test_original_facebookresearch_layout_loads_through_timm_filter(tmp_path):
    model = _tiny_model()
    sd = _original_dinov2_layout(model)
    assert "register_tokens" in sd and "mask_token" in sd and sd["pos_embed"].shape[1] == 17
    pth = tmp_path / "dinov2_tiny_reg4_pretrain.pth"
    torch.save(sd, pth)
    feats, x = _features(tmp_path, str(pth))
    np.testing.assert_allclose(feats["cls"], _reference(model, x), atol=2e-5)
    st = tmp_path / "dinov2_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    feats_st, _ = _features(tmp_path, str(st))
    np.testing.assert_allclose(feats_st["cls"], feats["cls"], atol=1e-6)


class NotAllowlisted:
    """Any class a checkpoint may pickle: loading it would run arbitrary code, so it must be refused."""


def test_pth_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _tiny_model().state_dict(), "obj": NotAllowlisted()}, path)
    with pytest.raises(WeightsError, match="weights_only"):
        _features(tmp_path, str(path))


def test_training_checkpoint_with_args_namespace_loads(tmp_path):
    import argparse

    model = _tiny_model()
    path = tmp_path / "train_checkpoint.pth"  # timm allowlists argparse.Namespace, as training scripts save it
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    feats, x = _features(tmp_path, str(path))
    np.testing.assert_allclose(feats["cls"], _reference(model, x), atol=2e-5)


def test_missing_hub_weights_say_how_to_pass_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError, match="--weights PATH") as info:
        resolve_weights("vit_small_patch14_reg4_dinov2.lvd142m", "hub")
    assert "timm/vit_small_patch14_reg4_dinov2.lvd142m" in str(info.value)


def test_hub_weights_are_read_from_the_cache_only(tmp_path, monkeypatch):
    model = _tiny_model()
    cache = tmp_path / "hub"
    snap = cache / "models--timm--vit_small_patch14_reg4_dinov2.lvd142m" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (cache / "models--timm--vit_small_patch14_reg4_dinov2.lvd142m" / "refs").mkdir()
    (cache / "models--timm--vit_small_patch14_reg4_dinov2.lvd142m" / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snap / "model.safetensors"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    weights = resolve_weights("vit_small_patch14_reg4_dinov2.lvd142m", "hub")
    assert weights.source == "hub" and weights.path.endswith("model.safetensors") and len(weights.sha256) == 64
    feats, x = _features(tmp_path, "hub")
    np.testing.assert_allclose(feats["cls"], _reference(model, x), atol=2e-5)


def test_bad_weights_arguments(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(TINY_MODEL, str(tmp_path / "nope.safetensors"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(WeightsError, match="is not one of"):
        resolve_weights(TINY_MODEL, str(tmp_path / "w.txt"))


def test_random_weights_are_seeded_and_recorded(tmp_path):
    a, x = _features(tmp_path, "random")
    b, _ = _features(tmp_path, "random")
    np.testing.assert_array_equal(a["cls"], b["cls"])
    assert resolve_weights(TINY_MODEL, "random").record() == {"source": "random", "path": None,
                                                                "sha256": "random", "seed": 0}
