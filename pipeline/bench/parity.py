"""Parity of two ways of computing the same features, by the seed report's criteria (PASS/FAIL)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from pipeline.extract.backbone import Backbone, create_backbone
from pipeline.extract.config import ExtractConfig

log = logging.getLogger(__name__)

COSINE_MIN = 0.999
MAE_MAX = 0.01
TRIMMED_REL_MAX = 0.01  # 1 %


def compare(reference: np.ndarray, other: np.ndarray, trim: float = 0.05) -> dict:
    """Cosine (min over rows), mean absolute error, and mean relative error with the top `trim` removed."""
    a = np.asarray(reference, np.float64)
    b = np.asarray(other, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    abs_err = np.abs(a - b)
    rel = np.sort((abs_err / (np.abs(a) + 1e-6)).ravel())
    kept = rel[: max(1, int(round(len(rel) * (1 - trim))))]
    result = {"cosine_min": float(cos.min()), "mae": float(abs_err.mean()), "trimmed_rel": float(kept.mean())}
    result["pass"] = bool(result["cosine_min"] > COSINE_MIN and result["mae"] < MAE_MAX
                          and result["trimmed_rel"] < TRIMMED_REL_MAX)
    return result


def _features(backbone: Backbone, images: torch.Tensor) -> dict[str, np.ndarray]:
    return {k: v.float().cpu().numpy() for k, v in backbone(images.to(backbone.device)).items()}


def unfused_backbone(cfg: ExtractConfig, device: torch.device) -> Backbone:
    """The same model with timm's fused SDPA attention off (TIMM_FUSED_ATTN=0), built after the switch."""
    from timm.layers import set_fused_attn

    set_fused_attn(False)
    try:
        return create_backbone(cfg, device)
    finally:
        set_fused_attn(True)


def run_parity(cfg: ExtractConfig, images: torch.Tensor, include_compile: bool = False,
               accelerator: torch.device | None = None) -> list[dict]:
    """Every pair of the report: fused vs unfused attention, fp16 vs fp32 storage, fast paths vs fp32, and
    CPU vs an accelerator when one is given. Returns one row per (pair, feature)."""
    cpu = torch.device("cpu")
    base = create_backbone(replace(cfg, quantize=None, compile=False, precision="fp32"), cpu)
    ref = _features(base, images)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    pairs["unfused attention vs fused"] = _features(unfused_backbone(cfg, cpu), images)
    pairs["float16 storage vs float32"] = {k: v.astype(np.float16).astype(np.float32) for k, v in ref.items()}
    pairs["int8 (CPU fast path) vs fp32"] = _features(create_backbone(replace(cfg, quantize="int8"), cpu), images)
    pairs["bf16 autocast vs fp32"] = _features(create_backbone(replace(cfg, precision="bf16"), cpu), images)
    if include_compile:
        pairs["torch.compile vs eager"] = _features(create_backbone(replace(cfg, compile=True), cpu), images)
    if accelerator is not None:
        pairs[f"{accelerator.type} vs cpu"] = _features(create_backbone(cfg, accelerator), images)
    rows = []
    for name, feats in pairs.items():
        for feature in ("cls", "patch_mean"):
            rows.append({"pair": name, "feature": feature, **compare(ref[feature], feats[feature])})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'pair':<32} {'feature':<11} {'cos min':>9} {'MAE':>9} {'trim rel':>9}  result",
             f"{'(criteria)':<32} {'':<11} {'>' + str(COSINE_MIN):>9} {'<' + str(MAE_MAX):>9} "
             f"{'<' + format(TRIMMED_REL_MAX, '.0%'):>9}"]
    for r in rows:
        lines.append(f"{r['pair']:<32} {r['feature']:<11} {r['cosine_min']:>9.5f} {r['mae']:>9.5f} "
                     f"{r['trimmed_rel']:>9.2%}  {'PASS' if r['pass'] else 'FAIL'}")
    return "\n".join(lines)
