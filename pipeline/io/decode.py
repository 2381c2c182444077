"""Image bytes → RGB PIL image: EXIF orientation, mode conversion, JPEG draft, decompression-bomb limit."""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# Data errors a broken or hostile file can raise while Pillow identifies or decodes it. Anything else
# (TypeError, AttributeError, ...) is our bug and propagates.
DATA_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, Image.DecompressionBombError,
               MemoryError, ZeroDivisionError)

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
_BYTESIO = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")


class SampleError(Exception):
    """A sample that cannot become a feature row: recorded as a failure row with stage and reason."""

    def __init__(self, stage: str, reason: str, detail: str) -> None:
        super().__init__(f"{stage}: {reason}: {detail}")
        self.stage, self.reason, self.detail = stage, reason, detail[:500]


@dataclass
class Decoded:
    image: Image.Image  # RGB, EXIF orientation applied, possibly reduced by JPEG draft
    width: int  # original size after EXIF orientation (before any draft reduction)
    height: int


def decode_image(
    data: bytes,
    max_pixels: int,
    target: Callable[[int, int], tuple[int, int]] | None = None,
    draft: bool = True,
) -> Decoded:
    """Decode encoded bytes into an RGB image, or raise SampleError(stage='decode').

    `target(w, h)` gives the smallest (w, h) the preprocessing will need from an image of size (w, h);
    a JPEG at least twice that size is decoded at reduced scale with Pillow's `draft` (DCT scaling),
    which is several times faster and changes nothing the resize would not have averaged away.
    """
    if not data:
        raise SampleError("decode", "EmptyImage", "zero-byte image payload")
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check, for formats that allocate before size is known
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise Image.DecompressionBombError(f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
            orientation = _orientation(img)
            if orientation in _SWAPS_AXES:
                w, h = h, w
            if draft and target is not None and img.format == "JPEG":
                need_w, need_h = target(w, h)
                if orientation in _SWAPS_AXES:
                    need_w, need_h = need_h, need_w
                if img.size[0] >= 2 * need_w and img.size[1] >= 2 * need_h:
                    img.draft("RGB", (need_w, need_h))
            img.load()
            if orientation not in (None, 1):
                img = ImageOps.exif_transpose(img)
            img = to_rgb(img)
    except SampleError:
        raise
    except Image.DecompressionBombError as exc:
        raise SampleError("decode", "DecompressionBombError", str(exc)) from exc
    except Image.DecompressionBombWarning as exc:
        raise SampleError("decode", "DecompressionBombError", str(exc)) from exc
    except DATA_ERRORS as exc:
        raise SampleError("decode", type(exc).__name__, _BYTESIO.sub("image bytes", str(exc) or repr(exc))) from exc
    return Decoded(image=img, width=w, height=h)


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(_EXIF_ORIENTATION)
    except DATA_ERRORS:
        return None  # unreadable EXIF: treat as upright rather than fail the image


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB. Transparent images are composited on white; 16/32-bit scaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            top = 65535.0  # the mode says 16 bits: a dark 16-bit image stays dark
        else:  # 32-bit int / float carry no range: 8-bit, 16-bit or unit-range values, by their maximum
            peak = arr.max() if arr.size else 0.0
            top = 1.0 if mode == "F" and peak <= 1.0 else 255.0 if peak <= 255 else 65535.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return img.convert("RGB")


def thumbnail_jpeg(data: bytes, size: int, max_pixels: int) -> bytes:
    """JPEG bytes of the image at most `size` px a side (a JPEG is decoded at reduced scale); raises SampleError
    (decode) or one of DATA_ERRORS (resize, encode) when it cannot be made."""

    def target(w: int, h: int) -> tuple[int, int]:
        scale = min(1.0, size / max(w, h, 1))
        return math.ceil(w * scale), math.ceil(h * scale)

    img = decode_image(data, max_pixels, target=target).image
    img.thumbnail((size, size))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()
