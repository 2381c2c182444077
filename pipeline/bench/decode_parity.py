"""The device JPEG decode against the CPU path on the same bytes: model-input pixels, pHash bits, ms per image."""

from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.extract.device_decode import DeviceDecoder, probe_jpeg
from pipeline.extract.device_phash import hamming
from pipeline.extract.loader import ExtractDataset
from pipeline.extract.preprocess import Preprocess

MAX_PIXELS = 10**9


def measure(datas: list[bytes], pre: Preprocess, draft: bool, device: torch.device) -> dict:
    """Each JPEG the device path takes, by both paths: |device - CPU| over the model input (max, mean, p99,
    p99.9), pHash bits (max, mean), ms/image of each path here, and with `draft` the CPU path's own draft vs
    full decode (for scale). JPEGs the probe refuses are left out (they take the CPU path anyway)."""
    datas = [d for d in datas if probe_jpeg(d, MAX_PIXELS) is not None]
    dataset = ExtractDataset([], pre, 4, MAX_PIXELS, jpeg_draft=draft)
    full = ExtractDataset([], pre, 4, MAX_PIXELS, jpeg_draft=False)
    decoder = DeviceDecoder(pre, device, target=dataset.decode_target, draft=draft)
    diffs, own, bits = [], [], []
    cpu_s = device_s = 0.0
    for data in datas:
        item = probe_jpeg(data, MAX_PIXELS)
        t0 = time.perf_counter()
        tensor, meta = dataset.process("s", 0, "k", data)
        t1 = time.perf_counter()
        out = decoder([item])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        cpu_s, device_s = cpu_s + t1 - t0, device_s + t2 - t1
        if out.ok != [0]:
            raise RuntimeError("a JPEG the probe passed did not decode on the device")
        diffs.append((out.images[0].cpu().int() - tensor.int()).abs().flatten().numpy())
        if draft:
            own.append((full.process("s", 0, "k", data)[0].int() - tensor.int()).abs().flatten().numpy())
        cpu = np.array([meta.phash, meta.phash_mirror, meta.phash_flip, meta.phash_rot180], dtype=np.uint64)
        bits.append(hamming(out.phashes[0], cpu))
    result = {"pixels": _figures(diffs), "phash_bits": {"max": int(np.max(bits)), "mean": float(np.mean(bits))},
              "ms_per_image": {"cpu_path": 1000 * cpu_s / len(datas), "device_path": 1000 * device_s / len(datas)}}
    if draft:
        result["cpu_draft_vs_full_decode"] = _figures(own)
    return result


def _figures(diffs: list[np.ndarray]) -> dict:
    d = np.concatenate(diffs).astype(np.float64)
    return {"max": float(d.max()), "mean": round(float(d.mean()), 4), "p99": float(np.percentile(d, 99)),
            "p99.9": float(np.percentile(d, 99.9))}
