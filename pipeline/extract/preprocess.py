"""The model's own eval transform, stopped before ToTensor/Normalize: PIL RGB → uint8 CHW tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image
from timm.data import create_transform
from torchvision.transforms import Resize
from torchvision.transforms.functional import pil_to_tensor

_PIL_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize + crop exactly as timm's eval transform for the model (fixed), or aspect-preserving (dynamic).

    Normalisation (mean/std) is not done here: batches travel as uint8 and are normalised on the device.
    """

    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float
    crop_mode: str
    resize_mode: str = "fixed"
    patch_size: int = 14

    def __post_init__(self) -> None:
        if self.resize_mode == "fixed":
            transform = create_transform(
                input_size=self.input_size, interpolation=self.interpolation, mean=self.mean, std=self.std,
                crop_pct=self.crop_pct, crop_mode=self.crop_mode, is_training=False,
            )
            steps = [t for t in transform.transforms if type(t).__name__ not in ("ToTensor", "MaybeToTensor",
                                                                                    "Normalize")]
            object.__setattr__(self, "_steps", steps)

    @property
    def resolution(self) -> int:
        return max(self.input_size[1:])

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the tensor this image becomes."""
        if self.resize_mode == "fixed":
            return self.input_size[2], self.input_size[1]
        scale = self.resolution / max(width, height)
        p = self.patch_size
        return max(p, round(width * scale / p) * p), max(p, round(height * scale / p) * p)

    def needed_size(self, width: int, height: int) -> tuple[int, int]:
        """Smallest decoded (width, height) that loses nothing for this transform (guides JPEG draft)."""
        if self.resize_mode == "dynamic":
            return self.output_size(width, height)
        resize = next((t for t in self._steps if isinstance(t, Resize)), None)
        if resize is None:
            return width, height
        size = resize.size
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[1]), int(size[0])
        short = size[0] if isinstance(size, (list, tuple)) else size
        scale = short / min(width, height)
        return math.ceil(width * scale), math.ceil(height * scale)

    def __call__(self, img: Image.Image, original_size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 CHW tensor. `original_size` (before JPEG draft) fixes the dynamic-mode shape."""
        if self.resize_mode == "fixed":
            for step in self._steps:
                img = step(img)
        else:
            size = self.output_size(*(original_size or img.size))
            if img.size != size:
                img = img.resize(size, _PIL_INTERP.get(self.interpolation, Image.Resampling.BICUBIC))
        return pil_to_tensor(img)

    def record(self) -> dict:
        """The provenance fields that describe this preprocessing."""
        return {
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "resize_mode": self.resize_mode,
            "patch_size": self.patch_size,
        }
