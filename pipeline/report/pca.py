"""The DINOv2 picture: PCA of patch tokens fitted jointly over a few images, shown as RGB and a foreground mask.

As in the DINOv2 paper (Fig. 1) and its demo: the patch tokens of all given images (final norm, prefix tokens
dropped) go into one PCA; the first component, thresholded, separates foreground from background; the first
three components, scaled jointly over all images, become RGB so that matching parts get matching colours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.errors import ConfigError, InputError, MissingInputError
from pipeline.extract.backbone import create_backbone
from pipeline.extract.config import DEFAULT_MAX_PIXELS, ExtractConfig
from pipeline.extract.device import resolve_device
from pipeline.io.decode import SampleError, decode_image
from pipeline.io.files import write_json_atomic
from pipeline.io.shards import list_image_files
from pipeline.io.tables import make_folder
from pipeline.report.config import PcaConfig
from pipeline.report.results import PcaResult

log = logging.getLogger(__name__)


def fit_pca(x: np.ndarray, n: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, components (n, D), explained variance ratio) by an eigendecomposition of the covariance;
    each component's sign is fixed (largest loading positive) so that reruns agree."""
    x = x.astype(np.float64)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(1, len(x) - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:n]
    comps = vectors[:, order].T
    comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]
    ratio = values[order] / max(values.sum(), 1e-12)
    return mean, comps, ratio


def border_mask(grid: tuple[int, int]) -> np.ndarray:
    gh, gw = grid
    m = np.zeros((gh, gw), bool)
    m[0], m[-1], m[:, 0], m[:, -1] = True, True, True, True
    return m.ravel()


def pca_maps(patches: np.ndarray, grid: tuple[int, int], threshold: float = 0.0, colours: str = "all"
             ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(B, P, D) patch tokens → RGB (B, gh, gw, 3) uint8 and foreground mask (B, gh, gw) bool, one PCA over all.

    The first component's sign is arbitrary; it is turned so that border patches (mostly background in
    photos) score below the mean, making the thresholded side the foreground.
    """
    b, p, d = patches.shape
    x = patches.reshape(b * p, d)
    mean, comps, ratio = fit_pca(x, 3)
    scores = (x - mean) @ comps.T
    border = np.tile(border_mask(grid), b)
    if scores[border, 0].mean() > 0:
        scores[:, 0] *= -1
    z = scores[:, 0] / max(scores[:, 0].std(), 1e-12)
    fg = z > threshold
    if colours == "foreground" and fg.sum() >= 4:
        fmean, fcomps, _ = fit_pca(x[fg], 3)
        rgb_scores = np.zeros_like(scores)
        rgb_scores[fg] = (x[fg] - fmean) @ fcomps.T
        rgb = _to_uint8(rgb_scores, fg) * fg[:, None]
    else:
        rgb = _to_uint8(scores, np.ones(len(x), bool))
    info = {"explained_variance_ratio": [round(float(r), 4) for r in ratio],
            "foreground_fraction": [round(float(f), 4) for f in fg.reshape(b, p).mean(1)]}
    return rgb.reshape(b, *grid, 3).astype(np.uint8), fg.reshape(b, *grid), info


def _to_uint8(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each component scaled to 0-255 over `rows` of all images jointly (1st-99th percentile)."""
    lo = np.percentile(scores[rows], 1, axis=0)
    hi = np.percentile(scores[rows], 99, axis=0)
    return np.clip((scores - lo) / np.maximum(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def compose(image: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> Image.Image:
    """input (H, W, 3) | PCA RGB | mask, the patch maps upsampled to the input size (nearest): (3W, H)."""
    h, w = image.shape[:2]
    pca = Image.fromarray(rgb).resize((w, h), Image.Resampling.NEAREST)
    fg = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST).convert("RGB")
    out = Image.new("RGB", (3 * w, h))
    out.paste(Image.fromarray(image), (0, 0))
    out.paste(pca, (w, 0))
    out.paste(fg, (2 * w, 0))
    return out


@torch.inference_mode()
def patch_tokens(backbone, images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW → (N, P, D) float32 final-norm patch tokens (prefix tokens: CLS, registers, dropped)."""
    x = (images.to(backbone.device).float() - backbone.mean) / backbone.std
    tokens = backbone.model.forward_features(x)
    if tokens.ndim != 3:
        raise ConfigError(f"{backbone.cfg.model} gives no token sequence: the PCA picture needs a ViT")
    return tokens[:, backbone.num_prefix:].float().cpu()


def run_pca(cfg: PcaConfig) -> PcaResult:
    """Write `OUT/<relative path>.png` for each image and `OUT/pca.json`; returns the PNGs, grid and record."""
    t0 = time.perf_counter()
    files = list_image_files(cfg.images)[0][:cfg.max_images]
    if not files:
        raise MissingInputError(f"no image files found in {cfg.images!r}")
    out = make_folder(cfg.out)  # before the model: a file in the way is said at once
    ecfg = ExtractConfig(out=cfg.out, images=cfg.images, model=cfg.model, weights=cfg.weights,
                         model_kwargs=cfg.model_kwargs, resolution=cfg.resolution, crop_pct=cfg.crop_pct,
                         device=cfg.device,
                         progress=False)
    backbone = create_backbone(ecfg, resolve_device(cfg.device))
    pre = backbone.preprocess
    inputs, names, failures = [], [], {}
    for rel in files:
        try:
            decoded = decode_image(Path(cfg.images, rel).read_bytes(), DEFAULT_MAX_PIXELS, target=pre.needed_size)
            inputs.append(pre(decoded.image, (decoded.width, decoded.height)))
            names.append(rel)
        except SampleError as err:
            failures[rel] = f"{err.reason}: {err.detail}"
        except OSError as exc:
            failures[rel] = f"{type(exc).__name__}: {exc}"
    for rel, why in failures.items():
        log.warning("pca: %s skipped (%s)", rel, why)
    if not inputs:
        raise InputError(f"none of the {len(files)} images in {cfg.images} could be read")
    batch = torch.stack(inputs)
    patch = pre.patch_size
    grid = (batch.shape[2] // patch, batch.shape[3] // patch)
    tokens = torch.cat([patch_tokens(backbone, batch[s:s + cfg.batch_size])
                        for s in range(0, len(batch), cfg.batch_size)]).numpy()
    if tokens.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"{tokens.shape[1]} patch tokens do not make a {grid[0]}×{grid[1]} grid")
    rgb, mask, info = pca_maps(tokens, grid, cfg.threshold, cfg.colours)
    written = []
    for i, rel in enumerate(names):
        path = out / f"{rel}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        compose(batch[i].permute(1, 2, 0).numpy(), rgb[i], mask[i]).save(path)
        written.append(str(path))
    record = {"config": asdict(cfg), "weights": backbone.weights.record(), "input_size": list(batch.shape[1:]),
              "grid": list(grid), "patches": int(tokens.shape[0] * tokens.shape[1]), "images": names,
              "written": written, "failures": failures, **info, "seconds": round(time.perf_counter() - t0, 3)}
    write_json_atomic(record, out / "pca.json")
    return PcaResult(out, [Path(w) for w in written], grid, record["explained_variance_ratio"], failures,
                     record["seconds"], record)
