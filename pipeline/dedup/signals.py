"""What a person looks at to pick the copy worth keeping: size, colour, sharpness, compression, EXIF, age."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

SHARPNESS_SIDE = 256  # sharpness is measured with the image resized to this short side, so sizes compare
GREY_SPREAD = 3.0  # mean per-pixel channel spread (max - min, 0-255) at or below which an image is greyscale
LOSSLESS = 101.0  # quality of a lossless format: above any JPEG
_LOSSLESS_FORMATS = {"PNG", "BMP", "TIFF", "PPM", "GIF", "TGA", "QOI"}
# The IJG (libjpeg) standard luminance table: a JPEG's quality is estimated by matching its table's sum to it.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.int64)


@dataclass(frozen=True)
class ImageSignals:
    """The keeper's evidence about one file; None where it could not be told (e.g. WebP quality)."""

    width: int
    height: int
    colour: bool
    sharpness: float  # variance of the grey Laplacian at SHARPNESS_SIDE
    quality: float | None  # JPEG quality estimate 1-100, LOSSLESS for lossless formats
    format: str
    exif: bool
    sha1: bytes

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _ijg_sums() -> np.ndarray:
    """Sum of the IJG luminance table scaled to each quality 1..100 (libjpeg's jpeg_quality_scaling)."""
    sums = []
    for q in range(1, 101):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        sums.append(np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255).sum())
    return np.array(sums, np.int64)


_SUMS = _ijg_sums()


def jpeg_quality(tables: dict | None) -> float | None:
    """The IJG quality whose luminance table sums closest to the file's (order-free, so zigzag or not)."""
    if not tables or 0 not in tables:
        return None
    total = int(np.sum(np.asarray(tables[0], np.int64)))
    return float(1 + int(np.argmin(np.abs(_SUMS - total))))


def _sharpness(grey: Image.Image) -> float:
    w, h = grey.size
    scale = SHARPNESS_SIDE / min(w, h)
    size = (max(3, round(w * scale)), max(3, round(h * scale)))
    g = np.asarray(grey.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def _is_colour(img: Image.Image) -> bool:
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return False
    small = np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), np.int16)
    spread = small.max(axis=2) - small.min(axis=2)
    return float(spread.mean()) > GREY_SPREAD


def read_signals(data: bytes) -> ImageSignals:
    """Signals of one encoded image; raises what PIL raises (pipeline.io.decode.DATA_ERRORS) on a bad file.

    A JPEG is decoded at the smallest DCT scale whose short side still reaches SHARPNESS_SIDE (a 12 MP photo
    in about a tenth of the time); the pixel count is the file's own, after EXIF orientation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
        fmt = img.format or ""
        tables = getattr(img, "quantization", None)
        tags = img.getexif()
        exif = bool(img.info.get("exif")) or len(tags) > 0
        width, height = img.size
        if tags.get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that turn the image by 90°
            width, height = height, width
        scale = SHARPNESS_SIDE / min(img.size)
        if fmt == "JPEG" and scale < 1 and img.mode in ("RGB", "L"):
            img.draft(img.mode, (max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        img = ImageOps.exif_transpose(img)
        img.load()
    quality = jpeg_quality(tables) if fmt in ("JPEG", "MPO") else LOSSLESS if fmt in _LOSSLESS_FORMATS else None
    grey = img.convert("L")
    return ImageSignals(width, height, _is_colour(img), _sharpness(grey), quality, fmt, exif,
                        hashlib.sha1(data).digest())
