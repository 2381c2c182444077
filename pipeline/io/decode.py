"""Image bytes → RGB pixels: EXIF orientation, mode conversion, JPEG draft, decompression-bomb limit."""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

try:  # libjpeg-turbo straight into a numpy array: the pixels Pillow would give, without its copies
    import simplejpeg
except ImportError:  # pragma: no cover - a platform without its wheel keeps Pillow's decoder
    simplejpeg = None

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


class Decoded:
    """A decoded image, EXIF orientation applied, possibly reduced by JPEG draft, as an H×W×C uint8 array
    (`pixels`: C = 3, RGB; or C = 4, RGBX, whose 4th byte is padding, from the fast JPEG path) and as a PIL
    image (`image`, mode RGB), each made from the other on first use; `view` is a PIL image over the same
    memory as `pixels` where Pillow can share it (mode RGBX then), for reading without a copy. All read-only.
    `width`, `height`: the original size after EXIF orientation (before any draft reduction)."""

    def __init__(self, width: int, height: int, image: Image.Image | None = None,
                 pixels: np.ndarray | None = None) -> None:
        if image is None and pixels is None:
            raise ValueError("Decoded needs an image or pixels")
        self.width, self.height = width, height
        self._image, self._pixels, self._view = image, pixels, None
        self._from_pixels = image is None

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            self._image = self.view if self.view.mode == "RGB" else self.view.convert("RGB")
        return self._image

    @property
    def view(self) -> Image.Image:
        if self._view is None:
            self._view = pil_image(self._pixels) if self._from_pixels else self._image
        return self._view

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.asarray(self._image)
        return self._pixels

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the decoded pixels (smaller than the original after JPEG draft)."""
        if self._pixels is not None:
            return self._pixels.shape[1], self._pixels.shape[0]
        return self._image.size


def pil_image(pixels: np.ndarray) -> Image.Image:
    """H×W×3 (RGB, copied into Pillow) or H×W×4 (RGBX, Pillow's own layout: no copy) uint8 → PIL image."""
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return Image.frombuffer("RGBX", (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels), "raw",
                                "RGBX", 0, 1)
    return Image.fromarray(pixels, mode="RGB")


def decode_image(
    data: bytes,
    max_pixels: int,
    target: Callable[[int, int], tuple[int, int]] | None = None,
    draft: bool = True,
    fast: bool = True,
) -> Decoded:
    """Decode encoded bytes into an RGB image, or raise SampleError(stage='decode').

    `target(w, h)` gives the smallest (w, h) the preprocessing will need from an image of size (w, h);
    a JPEG at least twice that size is decoded at reduced scale with Pillow's `draft` (DCT scaling),
    which is several times faster and changes nothing the resize would not have averaged away.

    `fast`: an upright colour JPEG is decoded by simplejpeg (libjpeg-turbo, as Pillow's, at the scale Pillow's
    draft would pick) straight into an RGBX array, Pillow's own pixel layout: the same pixels, bit for bit,
    with no copy between the decoder, the pHash (a Pillow view of the array) and the model's resize (a
    tensor view). Anything it refuses (a damaged stream, which it reports in strict mode) takes Pillow's
    path, so failures are Pillow's as before.
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
            need = None
            if draft and target is not None and img.format == "JPEG":
                need_w, need_h = target(w, h)
                if orientation in _SWAPS_AXES:
                    need_w, need_h = need_h, need_w
                if img.size[0] >= 2 * need_w and img.size[1] >= 2 * need_h:
                    need = (need_w, need_h)
            if fast and orientation in (None, 1):
                pixels = _turbo_decode(img, data, need)
                if pixels is not None:
                    return Decoded(w, h, pixels=pixels)
            if need is not None:
                img.draft("RGB", need)
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
    return Decoded(w, h, image=img)


def draft_scale(size: tuple[int, int], need: tuple[int, int] | None) -> int:
    """The DCT reduction Pillow's `JpegImageFile.draft` picks for `need`: the largest of 8, 4, 2, 1 that the
    size is at least that many times the need (then each side is ceil(side / scale))."""
    if need is None:
        return 1
    ratio = min(size[0] // max(1, need[0]), size[1] // max(1, need[1]))
    return next(s for s in (8, 4, 2, 1) if ratio >= s)


def _turbo_decode(img: Image.Image, data: bytes, need: tuple[int, int] | None) -> np.ndarray | None:
    """A colour JPEG decoded by simplejpeg at Pillow's draft scale, H×W×4 RGBX; None when it is not such a
    JPEG, simplejpeg is missing, or libjpeg-turbo reports the stream damaged (Pillow then decides)."""
    if simplejpeg is None or img.format != "JPEG" or img.mode != "RGB":
        return None
    scale = draft_scale(img.size, need)
    w, h = img.size
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGBX", strict=True, min_width=-(-w // scale),
                                        min_height=-(-h // scale))
    except ValueError:
        return None
    if pixels.shape[:2] != (-(-h // scale), -(-w // scale)):  # a scale other than Pillow's: keep Pillow's pixels
        return None
    pixels.flags.writeable = False
    return pixels


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
