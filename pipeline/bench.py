"""Throughput measurement: the backbone alone on in-memory batches vs end-to-end extraction, one run."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline.backbone import Backbone
from pipeline.config import ExtractConfig
from pipeline.extract import run_extract

log = logging.getLogger(__name__)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The machine's fp32 limit on these threads: GFLOP/s of an n×n matrix product (after a warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


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
        _sync(backbone.device)
        t0 = time.perf_counter()
        backbone(x)
        _sync(backbone.device)
        times.append(time.perf_counter() - t0)
    t = np.asarray(times)
    return {"batch_size": batch_size, "images_per_second": batch_size * len(t) / t.sum(),
            "p50_ms": float(np.percentile(t, 50) * 1e3), "p90_ms": float(np.percentile(t, 90) * 1e3),
            "repeats": repeats, "warmup": warmup}


def end_to_end_throughput(cfg: ExtractConfig) -> dict:
    """A full `run_extract` into a fresh temporary OUT; images/s over the run's wall time (model load excluded)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as out:
        stats = run_extract(replace(cfg, out=str(Path(out) / "out"), progress=False))
    return {"images": stats.images, "failures": stats.failures, "seconds": stats.seconds,
            "images_per_second": stats.images_per_second}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)
