"""Throughput of the model: backbone sweep, end-to-end, naive loop, fast paths, dynamic resolution, the plot."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.bench.machine import sync
from pipeline.bench.paired import InRunReference
from pipeline.extract.backbone import Backbone, create_backbone, create_model
from pipeline.extract.config import ExtractConfig
from pipeline.extract.runner import run_extract
from pipeline.extract.weights import resolve_weights
from pipeline.io.decode import decode_image

log = logging.getLogger(__name__)


def flops_per_image(backbone: Backbone) -> float:
    """Floating-point operations of one forward pass (torch's FLOP counter; 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = backbone.preprocess.input_size[1:]
    x = torch.zeros((1, 3, h, w), dtype=torch.uint8, device=backbone.device)
    with FlopCounterMode(display=False) as counter:
        backbone(x)
    return float(counter.get_total_flops())


def backbone_throughput(backbone: Backbone, batch_size: int, warmup: int = 3, repeats: int = 10,
                        seed: int = 0) -> dict:
    """Images/s and latency percentiles of the backbone on random uint8 batches already on the device."""
    h, w = backbone.preprocess.input_size[1:]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch_size, 3, h, w), dtype=torch.uint8, generator=gen).to(backbone.device)
    for _ in range(warmup):
        backbone(x)
    times = []
    for _ in range(repeats):
        sync(backbone.device)
        t0 = time.perf_counter()
        backbone(x)
        sync(backbone.device)
        times.append(time.perf_counter() - t0)
    t = np.asarray(times)
    return {"batch_size": batch_size, "images_per_second": batch_size * len(t) / t.sum(),
            "p50_ms": float(np.percentile(t, 50) * 1e3), "p90_ms": float(np.percentile(t, 90) * 1e3),
            "repeats": repeats, "warmup": warmup}


def sweep(backbone: Backbone, batch_sizes: list[int], images_per_size: int = 64, warmup: int | None = None,
          repeats: int | None = None) -> list[dict]:
    """Backbone throughput per batch size; by default ~`images_per_size` timed images each (fits 10 min)."""
    flops = flops_per_image(backbone)
    out = []
    for bs in batch_sizes:
        r = repeats or max(3, images_per_size // bs)
        res = backbone_throughput(backbone, bs, warmup=warmup if warmup is not None else 2, repeats=r)
        res["gflops_achieved"] = res["images_per_second"] * flops / 1e9
        out.append(res)
        log.info("batch %d: %.2f images/s, p50 %.0f ms", bs, res["images_per_second"], res["p50_ms"])
    return out


def dynamic_resolution(cfg: ExtractConfig, files: list[Path]) -> dict:
    """End-to-end images/s with aspect-preserving sizes (fewer tokens on non-square photos), tokens per
    image against fixed mode, and the CLS cosine between the two modes on the same photos."""
    dyn = replace(cfg, resize_mode="dynamic")
    result = end_to_end_throughput(dyn)
    base = create_backbone(cfg, torch.device("cpu"))
    p = base.preprocess.patch_size
    fixed_tokens = (base.preprocess.input_size[1] // p) * (base.preprocess.input_size[2] // p)
    dyn_backbone = create_backbone(dyn, torch.device("cpu"))
    tokens, cos = [], []
    for f in files:
        d = decode_image(f.read_bytes(), 10**9, target=dyn_backbone.preprocess.needed_size)
        w, h = dyn_backbone.preprocess.output_size(d.width, d.height)
        tokens.append((w // p) * (h // p))
        x_dyn = dyn_backbone.preprocess(d.image, (d.width, d.height))[None]
        d2 = decode_image(f.read_bytes(), 10**9, target=base.preprocess.needed_size)
        x_fix = base.preprocess(d2.image, (d2.width, d2.height))[None]
        a, b = base(x_fix)["cls"], dyn_backbone(x_dyn)["cls"]
        cos.append(float(torch.nn.functional.cosine_similarity(a, b)[0]))
    result.update({"tokens_per_image_fixed": fixed_tokens, "tokens_per_image_dynamic": float(np.mean(tokens)),
                   "cls_cosine_vs_fixed_mean": float(np.mean(cos)), "cls_cosine_vs_fixed_min": float(np.min(cos))})
    return result


def end_to_end_throughput(cfg: ExtractConfig, reference: InRunReference | None = None) -> dict:
    """A full `run_extract` into a fresh temporary OUT; images/s over the run's wall time (model load excluded).

    With `reference`, the backbone alone is also measured inside the run (bench/paired.py): its forwards'
    seconds are taken out of the wall time ("seconds"; "seconds_with_reference" is the raw wall), and
    "reference_images_per_second" is the backbone's rate over the same stretch of time (None: no reference
    forward could be made: the loader's workers could not be found or paused)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as out:
        stats = run_extract(replace(cfg, out=str(Path(out) / "out"), progress=False), between_batches=reference)
    seconds = stats.seconds
    result = {"images": stats.images, "failures": stats.failures, "first_batch_seconds": stats.first_batch_seconds,
              "loader_wait_seconds": stats.loader_wait_seconds, "forward_seconds": stats.forward_seconds,
              "loader_cpu_seconds": stats.loader_cpu_seconds,
              "loader_cpu_in_forward_seconds": stats.loader_cpu_in_forward_seconds}
    if reference is not None:
        result["seconds_with_reference"] = seconds
        seconds -= reference.seconds + reference.setup_seconds
        result.update(reference_forwards=reference.forwards, reference_put_off=reference.put_off,
                      reference_paused_workers=reference.paused,
                      reference_seconds=reference.seconds,
                      reference_images_per_second=reference.images_per_second)
    return {**result, "seconds": seconds, "images_per_second": stats.images / seconds if seconds > 0 else 0.0}


def naive_loop(model_name: str, files: list[Path], resolution: int, weights_cfg: ExtractConfig) -> dict:
    """The loop a user copies from the timm model card: per image PIL open → timm transform → model(x[None])."""
    from timm.data import create_transform, resolve_model_data_config

    model = create_model(weights_cfg, resolve_weights(model_name, weights_cfg.weights)).eval()
    data = resolve_model_data_config(model)
    data["input_size"] = (3, resolution, resolution)
    transform = create_transform(**data, is_training=False)
    with torch.inference_mode():
        model.forward_features(transform(Image.open(files[0]).convert("RGB"))[None])  # warm-up
        t0 = time.perf_counter()
        for f in files:
            model.forward_features(transform(Image.open(f).convert("RGB"))[None])
        seconds = time.perf_counter() - t0
    return {"images": len(files), "seconds": seconds, "images_per_second": len(files) / seconds}


def fidelity(reference: Backbone, other: Backbone, images: torch.Tensor) -> dict:
    """Cosine of CLS and patch-mean features of a fast path against the fp32 path, on the same inputs."""
    a, b = reference(images), other(images)
    out = {}
    for name in ("cls", "patch_mean"):
        cos = torch.nn.functional.cosine_similarity(a[name].float(), b[name].float())
        out[f"{name}_cosine_min"] = float(cos.min())
        out[f"{name}_cosine_mean"] = float(cos.mean())
    return out


def real_batch(backbone: Backbone, files: list[Path]) -> torch.Tensor:
    """Real photos through the pipeline's own decode + preprocess, as one uint8 batch."""
    tensors = []
    for f in files:
        decoded = decode_image(f.read_bytes(), 10**9, target=backbone.preprocess.needed_size)
        tensors.append(backbone.preprocess(decoded.image, (decoded.width, decoded.height)))
    return torch.stack(tensors).to(backbone.device)


def fast_paths(cfg: ExtractConfig, base: Backbone, files: list[Path], batch_size: int,
               variants: dict[str, ExtractConfig] | None = None) -> dict:
    """Other ways to run the model (default: torch.compile): images/s at `batch_size` and fidelity against
    `base` on real photos."""
    images = real_batch(base, files)
    results = {}
    variants = {"compile": replace(cfg, compile="on")} if variants is None else variants
    for name, vcfg in variants.items():
        try:
            other = create_backbone(vcfg, base.device)
            other(images[:batch_size])  # compile happens here
            speed = backbone_throughput(other, batch_size, warmup=1, repeats=max(3, 48 // batch_size))
            results[name] = {"images_per_second": speed["images_per_second"], **fidelity(base, other, images)}
        except Exception as exc:  # noqa: BLE001 - a fast path that does not work here is reported, not fatal
            log.warning("fast path %s failed: %s", name, exc)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return results


def plot(result: dict, path: Path) -> None:
    """PNG, the precisions side by side: images/s per batch size with each precision's matmul limit dashed
    (log scale: the limits can be far above), and per precision the limit, the backbone and end-to-end, then
    the naive loop and the fast paths (fp32). Reads bench.json's "precisions", else its fp32 top-level keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flops = result["flops_per_image"]
    blocks = result.get("precisions") or {"fp32": {
        "matmul_gflops": result["matmul_gflops"], "backbone_sweep": result["backbone_sweep"],
        "backbone_at_batch": result["backbone_at_batch"], "end_to_end": result["end_to_end"]}}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ticks, labels = [], []
    for i, (name, block) in enumerate(blocks.items()):
        colour = f"C{i}"
        sweep_ = block["backbone_sweep"]
        ceiling = block["matmul_gflops"] * 1e9 / flops
        ax1.plot([r["batch_size"] for r in sweep_], [r["images_per_second"] for r in sweep_], "o-", color=colour,
                 label=f"{name} backbone")
        ax1.axhline(ceiling, color=colour, ls="--", label=f"{name} matmul limit ({ceiling:.1f}/s)")
        ax1.plot([result["batch_size"]], [block["end_to_end"]["images_per_second"]], "*", ms=12, color=colour,
                 label=f"{name} end-to-end")
        values = [ceiling, block["backbone_at_batch"]["images_per_second"], block["end_to_end"]["images_per_second"]]
        x0 = i * 4
        bars = ax2.bar([x0, x0 + 1, x0 + 2], values, color=colour, edgecolor="black")
        bars[0].set_alpha(0.35)  # the limit: a ceiling, not a measurement of the model
        for x, v in zip((x0, x0 + 1, x0 + 2), values):
            ax2.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        ticks += [x0, x0 + 1, x0 + 2]
        labels += [f"{name} limit", f"{name} backbone", f"{name} end-to-end"]
    extra = {"naive loop": result.get("naive_loop", {}).get("images_per_second")}
    extra.update({f"{k} backbone": fp.get("images_per_second") for k, fp in result.get("fast_paths", {}).items()})
    x = len(blocks) * 4
    for j, (name, value) in enumerate((k, v) for k, v in extra.items() if v):
        ax2.bar([x], [value], color=f"C{len(blocks) + j}", edgecolor="black")
        ax2.text(x, value, f"{value:.1f}", ha="center", va="bottom", fontsize=7)
        ticks.append(x)
        labels.append(f"{name} (fp32)" if name == "naive loop" else name)
        x += 1
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("batch size")
    ax1.set_ylabel("images/s")
    ax1.set_title(f"{result['model']} @ {result['resolution']} px, {result['device']}", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.set_yscale("log")
    ax2.set_xticks(ticks, labels, rotation=35, ha="right", fontsize=7)
    ax2.set_ylabel("images/s")
    ax2.set_title(f"batch {result['batch_size']}: limit, backbone, end-to-end per precision", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
