"""`--decode gpu`: batches of JPEG bytes made into model inputs on the device; the rest takes the CPU path."""

from __future__ import annotations

import functools
import io
import logging

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from pipeline.errors import ConfigError
from pipeline.extract.config import ExtractConfig
from pipeline.extract.device_decode import DeviceDecoder
from pipeline.extract.loader import Batch, ExtractDataset, assemble
from pipeline.extract.preprocess import Preprocess
from pipeline.io.decode import SampleError
from pipeline.io.samples import failure_row
from pipeline.io.stats import image_stats

log = logging.getLogger(__name__)


@functools.cache
def device_decodes_jpeg(device: torch.device) -> bool:
    """torchvision decodes a JPEG on this device (on CUDA: built with nvJPEG); tried once on a tiny image."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 60)).save(buffer, "JPEG")
    data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    try:
        out = decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
    except Exception as exc:  # noqa: BLE001 - any failure means: not on this device
        log.debug("torchvision cannot decode JPEGs on %s: %s", device, exc)
        return False
    return tuple(out[0].shape) == (3, 16, 16)


def resolve_decode(cfg: ExtractConfig, device: torch.device, preprocess: Preprocess) -> tuple[str, str]:
    """("cpu" | "device", why): where JPEGs are decoded. auto picks the device on CUDA when the resize is fixed
    and torchvision has nvJPEG; `gpu` asks for it (on a CPU device: torchvision's decoder in the model's process,
    for checking the path, no faster); dynamic resolution keeps the CPU path."""
    if cfg.decode == "cpu":
        return "cpu", "--decode cpu"
    fixed = preprocess.resize_mode == "fixed" and preprocess.on_tensors
    if cfg.decode == "gpu":
        if not fixed:
            raise ConfigError("--decode gpu resizes on the device with the fixed resize and crop: it cannot run "
                              "with --resize-mode dynamic (or a model whose eval transform has no tensor twin); "
                              "use --decode cpu")
        if not device_decodes_jpeg(device):
            raise ConfigError(f"--decode gpu: this torchvision cannot decode JPEGs on {device} (built without "
                              f"nvJPEG?); use --decode cpu")
        if device.type != "cuda":
            log.warning("--decode gpu on %s: JPEGs are decoded in the model's process by torchvision, no faster "
                        "than the loader's workers (a check of the path, not a speed-up)", device)
        return "device", "--decode gpu"
    if device.type != "cuda":
        return "cpu", f"auto: the loader's workers decode (the model runs on {device.type})"
    if not fixed:
        return "cpu", "auto: dynamic resolution resizes each image to its own shape on the CPU"
    if not device_decodes_jpeg(device):
        return "cpu", "auto: this torchvision has no nvJPEG decoder"
    return "device", "auto: JPEGs decoded by nvJPEG on the GPU in batches"


class DeviceStage:
    """Turns a batch's encoded JPEGs into its images on the device: decoded, oriented, resized and cropped
    there, pHashes from those pixels; a JPEG the device cannot decode takes the CPU path in this process, and one
    that fails there too becomes a failure row of its shard (`late`, added when the shard ends)."""

    def __init__(self, dataset: ExtractDataset, device: torch.device, stats: bool) -> None:
        self.dataset, self.device, self.stats = dataset, device, stats
        self.decoder = DeviceDecoder(dataset.preprocess, device, target=dataset.decode_target,
                                     draft=dataset.jpeg_draft)
        self.late: dict[str, list[dict]] = {}
        self.fallbacks = 0

    def __call__(self, batch: Batch) -> None:
        if not batch.encoded:
            return
        items, metas = batch.encoded, batch.metas
        done = self.decoder(items)
        decoded = [metas[i] for i in done.ok]
        for meta, hashes in zip(decoded, done.phashes):
            meta.phash, meta.phash_mirror, meta.phash_flip, meta.phash_rot180 = (int(h) for h in hashes)
        if self.stats and done.images is not None:
            host = done.images.cpu()
            for row, meta in enumerate(decoded):
                meta.stats = image_stats(host[row].numpy(), meta.width, meta.height)
        tensors, fallen = [], []
        for i in done.failed:
            meta = metas[i]
            self.fallbacks += 1
            try:
                tensor, again = self.dataset.process(meta.shard, meta.index, meta.key, items[i].data, cpu=True)
            except SampleError as err:
                self.late.setdefault(meta.shard, []).append(failure_row(meta.shard, meta.index, meta.key, err))
                continue
            again.kept = meta.kept
            tensors.append(tensor)
            fallen.append(again)
        parts = [done.images] if done.images is not None else []
        if tensors:
            parts.append(assemble(tensors).to(self.device))
        batch.images = torch.cat(parts) if len(parts) > 1 else (parts[0] if parts else None)
        batch.metas = decoded + fallen
        batch.encoded = []

    def failures_of(self, shard: str) -> list[dict]:
        """The failure rows of `shard` found here, handed over once."""
        return self.late.pop(shard, [])
