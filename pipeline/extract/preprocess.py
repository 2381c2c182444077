"""The model's own eval transform, stopped before ToTensor/Normalize: PIL RGB → uint8 CHW tensor.

The resize runs on uint8 tensors (torchvision's v2 kernels, antialiased bicubic as PIL's): faster than PIL's
resize, with pixels within 2 levels of PIL's (docs/PERFORMANCE.md); timm's Resize/CenterCrop steps are mapped
one to one, so sizes and crop offsets are timm's own. A step of another kind keeps the PIL path.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2 as T2
import torchvision.transforms.v2.functional as TF
from PIL import Image
from timm.data import create_transform
from torchvision import tv_tensors
from torchvision.transforms import CenterCrop, InterpolationMode, Resize
from torchvision.transforms.functional import pil_to_tensor

from pipeline.io.decode import pil_image

_PIL_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


_TENSOR_INTERP = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                  "nearest": InterpolationMode.NEAREST}


def image_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB PIL image (one copy of its pixels) or H×W×C uint8 array (no copy; C = 4 is RGBX, io.decode's fast
    path) → uint8 C×H×W tensor view, never written to. Resizing all four channels of RGBX costs no more than
    three (the uint8 kernels are written for four) and keeps the array's layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only array: the resize writes a new tensor
        return torch.from_numpy(np.asarray(img)).permute(2, 0, 1)


def _pil(img: Image.Image | np.ndarray) -> Image.Image:
    img = img if isinstance(img, Image.Image) else pil_image(np.asarray(img))
    return img if img.mode == "RGB" else img.convert("RGB")


def _size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    return img.size if isinstance(img, Image.Image) else (img.shape[1], img.shape[0])


def _tensor_steps(steps: list) -> list | None:
    """timm's PIL Resize/CenterCrop as torchvision v2 tensor transforms with the same sizes; None when a step
    has no exact tensor twin (the PIL path is kept)."""
    out = []
    for step in steps:
        if type(step) is Resize and step.interpolation in _TENSOR_INTERP.values():
            out.append(T2.Resize(step.size, interpolation=step.interpolation, max_size=step.max_size,
                                 antialias=True))
        elif type(step) is CenterCrop:
            out.append(T2.CenterCrop(step.size))
        else:
            return None
    return out


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
            object.__setattr__(self, "_tensor_steps", _tensor_steps(steps))

    @property
    def on_tensors(self) -> bool:
        """The fixed resize and crop run as tensor steps (on any device); False for dynamic mode or a PIL step."""
        return self.resize_mode == "fixed" and self._tensor_steps is not None

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

    def __call__(self, img: Image.Image | np.ndarray, original_size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 3×H×W tensor from an RGB PIL image or an H×W×3/4 uint8 array (io.decode's `pixels`: the tensor
        steps read it without a copy). `original_size` (before JPEG draft) fixes the dynamic-mode shape.

        The tensor is a view, not always contiguous (channels last, the X channel dropped): `torch.stack`
        writes the batch in NCHW in the copy it makes anyway, instead of one more copy per image here."""
        if self.resize_mode == "fixed":
            if self._tensor_steps is None:
                img = _pil(img)
                for step in self._steps:
                    img = step(img)
                return pil_to_tensor(img)
            x = image_tensor(img)
            for step in self._tensor_steps:
                x = step(x)
            return x[:3]
        size = self.output_size(*(original_size or _size(img)))
        if self.interpolation not in _TENSOR_INTERP:
            img = _pil(img)
            if img.size != size:
                img = img.resize(size, _PIL_INTERP.get(self.interpolation, Image.Resampling.BICUBIC))
            return pil_to_tensor(img)
        x = image_tensor(img)
        if _size(img) != size:
            x = TF.resize(x, [size[1], size[0]], interpolation=_TENSOR_INTERP[self.interpolation], antialias=True)
        return x[:3]

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed-mode resize + crop of a uint8 3×H×W tensor on any device (the device decode's pixels), with
        the CPU path's sizes and crop offsets. Each resize runs in float as two passes, across then down, each
        rounded to 0..255: the rounding of the CPU's uint8 kernels, which one float pass misses by up to a dozen
        levels at hard edges, so every device gives the CPU path's pixels within a level. ValueError where there
        are no tensor steps (dynamic mode, or a timm step with no tensor twin): decode on the CPU then."""
        steps = getattr(self, "_tensor_steps", None)
        if self.resize_mode != "fixed" or steps is None:
            raise ValueError(f"no tensor resize for resize_mode={self.resize_mode!r} with {self.interpolation!r}")
        x = x.float()
        for step in steps:
            if isinstance(step, T2.Resize):
                h, w = x.shape[-2:]
                box = tv_tensors.BoundingBoxes(torch.zeros(1, 4), format="XYXY", canvas_size=(h, w))
                new_h, new_w = step(box).canvas_size  # the step's own output size for this input
                for size in ([h, new_w], [new_h, new_w]):
                    if list(x.shape[-2:]) != size:
                        x = TF.resize(x, size, interpolation=step.interpolation, antialias=True)
                        x = x.round_().clamp_(0, 255)
            else:
                x = step(x)
        return x.to(torch.uint8)

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
