"""Parity of two ways of computing the same features, by the seed report's criteria (PASS/FAIL)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.bench.config import ParityConfig
from pipeline.bench.results import ParityResult
from pipeline.bench.throughput import real_batch
from pipeline.errors import MissingInputError
from pipeline.extract.backbone import Backbone, create_backbone
from pipeline.extract.config import ExtractConfig
from pipeline.extract.device import cpu_flags, resolve_device, resolve_precision
from pipeline.extract.device_decode import DeviceDecoder, probe_jpeg
from pipeline.extract.preprocess import Preprocess
from pipeline.io.tables import make_folder

log = logging.getLogger(__name__)

COSINE_MIN = 0.999
MAE_MAX = 0.01
TRIMMED_REL_MAX = 0.01  # 1 %
PARITY_MAX_PIXELS = 10**9  # as real_batch decodes


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
               accelerator: torch.device | None = None, flags: set[str] | None = None,
               device_decoded: torch.Tensor | None = None) -> list[dict]:
    """Every pair of the report, each against fp32 on the CPU: first `--precision auto` as it resolves on this
    CPU (`flags`: its kernel flags, None: read /proc/cpuinfo; where auto is fp32 the pair compares fp32 with
    itself), then fused vs unfused attention, fp16 vs fp32 storage, the fast paths, and CPU vs an accelerator
    when one is given (fp32, and auto where it resolves to another precision there), and `device_decoded` (the same
    photos through `--decode gpu`'s decoder) against the CPU decode. One row per (pair, feature)."""
    cpu = torch.device("cpu")
    fp32 = replace(cfg, compile="off", precision="fp32")
    ref = _features(create_backbone(fp32, cpu), images)
    auto = resolve_precision("auto", cpu, flags)[0]
    pairs: dict[str, dict[str, np.ndarray]] = {}
    pairs[auto_pair(auto)] = ref if auto == "fp32" else _features(
        create_backbone(replace(fp32, precision=auto), cpu), images)
    pairs["unfused attention vs fused"] = _features(unfused_backbone(fp32, cpu), images)
    pairs["float16 storage vs float32"] = {k: v.astype(np.float16).astype(np.float32) for k, v in ref.items()}
    pairs["bf16 autocast vs fp32"] = _features(create_backbone(replace(fp32, precision="bf16"), cpu), images)
    if device_decoded is not None:
        pairs["device decode vs cpu decode"] = _features(create_backbone(fp32, cpu), device_decoded)
    if include_compile:
        pairs["torch.compile vs eager"] = _features(create_backbone(replace(fp32, compile="on"), cpu), images)
    if accelerator is not None:
        pairs[f"{accelerator.type} vs cpu"] = _features(create_backbone(fp32, accelerator), images)
        on_device = resolve_precision("auto", accelerator)[0]
        if on_device != "fp32":
            pairs[f"{accelerator.type} auto ({on_device}) vs cpu fp32"] = _features(
                create_backbone(replace(fp32, precision=on_device), accelerator), images)
    rows = []
    for name, feats in pairs.items():
        for feature in ("cls", "patch_mean"):
            rows.append({"pair": name, "feature": feature, **compare(ref[feature], feats[feature])})
    return rows


def device_decoded(files: list[Path], images: torch.Tensor, preprocess: Preprocess,
                   device: torch.device | None) -> torch.Tensor:
    """`images` (the CPU decode of `files`) with each JPEG the device path takes decoded by it instead: on the GPU
    where there is one, else by torchvision's CPU decoder; the draft as `real_batch` drafts. On the CPU."""
    decoder = DeviceDecoder(preprocess, device or torch.device("cpu"), target=preprocess.needed_size)
    out = images.clone()
    items = {i: probe_jpeg(f.read_bytes(), PARITY_MAX_PIXELS) for i, f in enumerate(files)}
    taken = [i for i, item in items.items() if item is not None]
    done = decoder([items[i] for i in taken])
    for row, k in enumerate(done.ok):
        out[taken[k]] = done.images[row].cpu()
    return out


def auto_pair(precision: str) -> str:
    """The name of the first pair: `auto (bf16) vs fp32`."""
    return f"auto ({precision}) vs fp32"


def format_table(rows: list[dict]) -> str:
    lines = [f"{'pair':<32} {'feature':<11} {'cos min':>9} {'MAE':>9} {'trim rel':>9}  result",
             f"{'(criteria)':<32} {'':<11} {'>' + str(COSINE_MIN):>9} {'<' + str(MAE_MAX):>9} "
             f"{'<' + format(TRIMMED_REL_MAX, '.0%'):>9}"]
    for r in rows:
        lines.append(f"{r['pair']:<32} {r['feature']:<11} {r['cosine_min']:>9.5f} {r['mae']:>9.5f} "
                     f"{r['trimmed_rel']:>9.2%}  {'PASS' if r['pass'] else 'FAIL'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the parity check as one run
SHARED_PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "unsplash_coenm"


def parity_photos(cfg: ParityConfig, work: Path) -> tuple[list[Path], str]:
    """(up to `cfg.images` JPEGs, where they come from): `cfg.photos`, the shared photos, or generated ones."""
    folder = Path(cfg.photos) if cfg.photos else SHARED_PHOTOS
    if cfg.photos or folder.is_dir():
        files = sorted(folder.glob("*.jpg"))[: cfg.images]
        if not files:
            raise MissingInputError(f"no .jpg photos in {folder}")
        return files, str(folder)
    rng = np.random.default_rng(0)
    files = []
    for i in range(cfg.images):
        f = work / f"parity_{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8)).resize((400, 300)).save(f)
        files.append(f)
    return files, "generated"


def run_parity_check(cfg: ParityConfig, flags: set[str] | None = None) -> ParityResult:
    """Every pair on real photos (CPU vs the accelerator when one is here); writes `parity.json`, returns it as record.
    `flags`: the CPU's kernel flags, which decide what `--precision auto` is here (None: read /proc/cpuinfo)."""
    ecfg = ExtractConfig(out="unused", images="unused", model=cfg.model, weights=cfg.weights,
                         model_kwargs=cfg.model_kwargs, resolution=cfg.resolution, device="cpu", precision="fp32")
    work = make_folder(cfg.out)
    files, source = parity_photos(cfg, work)
    images = real_batch(create_backbone(ecfg, torch.device("cpu")), files)
    device = resolve_device("auto")
    accelerator = device if device.type != "cpu" else None
    flags = cpu_flags() if flags is None else flags
    auto, why = resolve_precision("auto", torch.device("cpu"), flags)
    decoded = device_decoded(files, images, create_backbone(ecfg, torch.device("cpu")).preprocess,
                             accelerator if accelerator is not None and accelerator.type == "cuda" else None)
    rows = run_parity(ecfg, images, include_compile=cfg.compile, accelerator=accelerator, flags=flags,
                      device_decoded=decoded)
    record = {"rows": rows, "photos": source, "images": len(files), "model": cfg.model, "weights": cfg.weights,
              "resolution": cfg.resolution, "accelerator": str(accelerator) if accelerator else None,
              "auto": {"precision": auto, "why": why, "pair": auto_pair(auto), "trivial": auto == "fp32"},
              "pass": all(r["pass"] for r in rows)}
    (work / "parity.json").write_text(json.dumps(record, indent=2) + "\n")
    return ParityResult(work / "parity.json", record["pass"], rows, record)


def format_parity(record: dict) -> str:
    """The PASS/FAIL table with what was compared, and which precision `auto` picked here and why."""
    auto = record["auto"]
    verdict = ("so its pair compares fp32 with itself: trivially PASS" if auto["trivial"]
               else f"its pair \"{auto['pair']}\" is the first row")
    lines = [f"parity of {record['model']} ({record['weights']} weights) at {record['resolution']} px on "
             f"{record['images']} photos from {record['photos']}",
             f"--precision auto → {auto['precision']} on this CPU ({auto['why']}); {verdict}",
             format_table(record["rows"])]
    if record["accelerator"] is None:
        lines.append("(no accelerator here: the CPU-vs-device pair runs where one is present)")
    return "\n".join(lines)
