"""Where a loader worker's CPU time goes per image: hash, decode, pHashes, resize and crop, batch assembly."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.extract.loader import ExtractDataset, assemble
from pipeline.extract.preprocess import Preprocess
from pipeline.io.decode import decode_image
from pipeline.io.phash import FAST_REDUCING_GAP, phash64_orientations

STAGES = ("sha1", "decode", "phash", "preprocess", "stack", "total")


def loader_costs(preprocess: Preprocess, files: list[Path], batch_size: int = 16, max_pixels: int = 10**9,
                 jpeg_draft: bool = True) -> dict:
    """Milliseconds of one CPU thread per image for each stage of `ExtractDataset.process`, each stage timed
    over all `files` (bytes read beforehand: disk is not measured), and `total`, the whole `process` call as
    the workers run it. The sum of the stages and `total` agree to within the timer's noise."""
    if not files:
        raise ValueError("loader_costs needs at least one image")
    datas = [f.read_bytes() for f in files]
    dataset = ExtractDataset([], preprocess, batch_size, max_pixels, jpeg_draft)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker
    try:
        decoded = [decode_image(d, max_pixels, target=dataset.decode_target, draft=jpeg_draft) for d in datas]
        tensors = [preprocess(x.pixels, (x.width, x.height)) for x in decoded]
        same = [t for t in tensors if t.shape == tensors[0].shape][:batch_size]
        ms = {
            "sha1": _per_item(datas, lambda d: hashlib.sha1(d).digest()),
            "decode": _per_item(datas, lambda d: decode_image(d, max_pixels, target=dataset.decode_target,
                                                              draft=jpeg_draft)),
            "phash": _per_item(decoded, lambda x: phash64_orientations(x.view, FAST_REDUCING_GAP)),
            "preprocess": _per_item(decoded, lambda x: preprocess(x.pixels, (x.width, x.height))),
            "stack": _per_item([same] * 8, assemble) / max(1, len(same)),
            "total": _per_item(datas, lambda d: dataset.process("bench", 0, "k", d)),
        }
    finally:
        torch.set_num_threads(threads)
    return {"images": len(files), "ms_per_image": ms,
            "decoded_pixels_mean": sum(x.size[0] * x.size[1] for x in decoded) / len(decoded)}


def _per_item(items: list, fn: Callable) -> float:
    fn(items[0])  # warm-up: first-call costs are not per image
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items) * 1e3


def format_loader_costs(costs: dict) -> str:
    """One line: ms per image per stage, one thread."""
    ms = costs["ms_per_image"]
    parts = ", ".join(f"{k} {ms[k]:.2f}" for k in STAGES if k != "total")
    return (f"loader, one thread, ms per image over {costs['images']} photos: {parts}; whole process "
            f"{ms['total']:.2f}")
