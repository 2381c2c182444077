"""Keeping an accelerator busy: the next batch copied on a side stream, features fetched one batch later.

Host→device copies of batch N+1 run while N is computed (as timm's PrefetchLoader); device→host copies of
the features are queued, and the host waits for them only after the next forward pass is queued."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
import torch


class HasImages(Protocol):
    images: torch.Tensor | None


def has_streams(device: torch.device) -> bool:
    """CUDA and Ascend NPU (torch-npu) queue work on streams; the CPU and MPS run in order."""
    return device.type in ("cuda", "npu")


def to_device_ahead(batches: Iterable[HasImages], device: torch.device) -> Iterator[HasImages]:
    """Each batch with its images on `device`. On an accelerator the copy of batch N+1 (pinned memory,
    non-blocking, on a side stream) is queued before batch N is handed out, so it runs while N is computed;
    the compute stream waits for the copy, and the copied memory is marked as used by it."""
    if not has_streams(device):
        for batch in batches:
            if batch.images is not None:
                batch.images = batch.images.to(device)
            yield batch
        return
    module = torch.get_device_module(device)
    side = module.Stream(device)
    it = iter(batches)
    ahead = _copy_next(it, device, module, side)
    while ahead is not None:
        current = module.current_stream(device)
        current.wait_stream(side)
        batch = ahead
        if batch.images is not None:
            _record_stream(batch.images, current)
        ahead = _copy_next(it, device, module, side)
        yield batch


def _copy_next(it: Iterator[HasImages], device: torch.device, module, side) -> HasImages | None:
    batch = next(it, None)
    if batch is not None and batch.images is not None:
        with module.stream(side):
            batch.images = batch.images.to(device, non_blocking=True)
    return batch


class HostFeatures:
    """Features on their way to the host as `dtype`: on an accelerator the copies are queued now (into pinned
    memory, with an event after them) and waited for in `numpy()`, so that the next batch's forward pass can
    be queued first; on the CPU they are ready at once."""

    def __init__(self, feats: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
        device = next(iter(feats.values())).device if feats else torch.device("cpu")
        self.event = None
        if has_streams(device):
            module = torch.get_device_module(device)
            self.tensors = {}
            for name, value in feats.items():
                value = value.to(dtype)
                host = _pinned_empty(value.shape, dtype)
                host.copy_(value, non_blocking=True)
                self.tensors[name] = host
            self.event = module.Event()
            self.event.record(module.current_stream(device))
        else:
            self.tensors = {name: value.to(dtype).cpu() for name, value in feats.items()}

    def numpy(self) -> dict[str, np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return {name: t.numpy() for name, t in self.tensors.items()}


def _record_stream(tensor: torch.Tensor, stream) -> None:
    tensor.record_stream(stream)  # the caching allocator keeps the memory until `stream` is done with it


def _pinned_empty(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)
