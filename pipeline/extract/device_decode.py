"""JPEG decode on the model's device (torchvision's nvJPEG; the same API on the CPU), pixels and pHashes as on the CPU.

Loader workers only read the header (`probe_jpeg`); `DeviceDecoder` decodes a batch in one call, applies the
EXIF orientation, emulates the CPU path's JPEG draft (an exact box mean by the factor Pillow's `draft` would
pick, before the model's antialiased resize: the CPU decodes at that reduced scale), runs the model's own
resize + crop (`Preprocess.tensor`) and hashes the drafted pixels (device_phash). Anything the device cannot
decode is handed back in `failed`, for the CPU path, which records the proper failure row.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from pipeline.extract.device_phash import box_reduce, grey32, phash_orientations
from pipeline.extract.preprocess import Preprocess
from pipeline.io.decode import DATA_ERRORS, draft_scale

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
_SOF_BASELINE = {0xC0, 0xC1}  # sequential Huffman; 0xC2 progressive, 0xC3 lossless, 0xC9.. arithmetic: CPU path
_SOF_OTHER = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7}


@dataclass(frozen=True)
class Encoded:
    """A JPEG as a loader worker leaves it for the device: bytes and header facts, no pixels decoded.
    `width`, `height`: the original size after EXIF orientation (as io.decode's Decoded)."""

    data: bytes
    width: int
    height: int
    orientation: int = 1  # EXIF orientation 1..8 (1 when absent or out of range, as the CPU path reads it)

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) as stored in the file, before the orientation is applied."""
        return (self.height, self.width) if self.orientation in _SWAPS_AXES else (self.width, self.height)


@dataclass
class DeviceDecoded:
    images: torch.Tensor | None  # uint8 N×3×H×W on the device, rows in the order of `ok`
    phashes: np.ndarray  # (N, 4) uint64: pHash, mirror, flip, rot180 (io.phash.phash64_orientations)
    ok: list[int] = field(default_factory=list)  # indices into the items that decoded
    failed: list[int] = field(default_factory=list)  # indices the caller decodes on the CPU


def _frame(data: bytes) -> tuple[int, int, int] | None:
    """(SOF marker, sample precision, offset of the first scan) from the marker segments before the first scan;
    None when the stream is not a JPEG's or ends first."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end, sof = 2, len(data), None
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:
            return (*sof, pos) if sof is not None else None
        if (marker in _SOF_BASELINE or marker in _SOF_OTHER) and sof is None and pos + 4 < end:
            sof = (marker, data[pos + 4])
        if marker == 0xD9 or length < 2:
            return None  # the image ends before its first scan
        pos += 2 + length
    return None


def probe_jpeg(data: bytes, max_pixels: int) -> Encoded | None:
    """Header only (Pillow's lazy open, no decode): an Encoded for a baseline 8-bit JPEG in YCbCr or greyscale,
    complete (an end marker after its scan; a trailer after that is fine) and within max_pixels; None for
    anything else (other formats, CMYK/YCCK, progressive, arithmetic, 12-bit, Adobe RGB, a damaged or truncated
    stream, too many pixels): the caller then runs the CPU path on it, which raises the proper SampleError.
    Never raises on bad bytes."""
    try:
        frame = _frame(data)
        if frame is None or frame[0] not in _SOF_BASELINE or frame[1] != 8:
            return None
        if data.find(b"\xff\xd9", frame[2]) < 0:  # no end after the scan (coded data stuffs its 0xFF bytes)
            return None  # truncated: Pillow refuses it, a device decoder might paint the rest grey
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=["JPEG"])
            w, h = img.size
            if img.mode not in ("RGB", "L") or w * h > max_pixels or w < 1 or h < 1:
                return None
            if img.mode == "RGB" and img.info.get("adobe_transform", 1) == 0:
                return None  # RGB stored without YCbCr: decoders disagree on it
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION)
            except DATA_ERRORS:
                orientation = None  # unreadable EXIF is upright, as in io.decode
    except DATA_ERRORS:
        return None
    orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    if orientation in _SWAPS_AXES:
        w, h = h, w
    return Encoded(data, w, h, orientation)


def orient(x: torch.Tensor, orientation: int) -> torch.Tensor:
    """A C×H×W tensor turned upright as PIL's ImageOps.exif_transpose turns the image."""
    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip(-1, -2)
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:
        return x.transpose(-1, -2)
    if orientation == 6:
        return x.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return x.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return x.transpose(-1, -2).flip(-2)
    return x


class DeviceDecoder:
    """Batches of Encoded JPEGs → the model's uint8 input and pHashes on `device`, as the CPU path makes them.

    `target(w, h)` is the CPU path's decode target (ExtractDataset.decode_target) and `draft` its jpeg_draft:
    with both, each image is box-reduced by the factor Pillow's draft would use, so the model sees and the
    pHash reads the same reduced image (None: full-size decode, then the resize). `max_batch_pixels` bounds the
    decoded pixels held at once (a batch of 12-Mpx photos is decoded in several calls)."""

    def __init__(self, preprocess: Preprocess, device: torch.device,
                 target: Callable[[int, int], tuple[int, int]] | None = None, draft: bool = True,
                 max_batch_pixels: int = 1 << 30) -> None:
        preprocess.tensor(torch.zeros(3, 8, 8, dtype=torch.uint8))  # the ValueError now, not at the first batch
        self.preprocess, self.device = preprocess, torch.device(device)
        self.target, self.draft, self.max_batch_pixels = target, draft, max_batch_pixels

    def scale(self, item: Encoded) -> int:
        """The DCT reduction the CPU path decodes this JPEG at (io.decode.decode_image with `target`)."""
        if not self.draft or self.target is None:
            return 1
        need_w, need_h = self.target(item.width, item.height)
        if item.orientation in _SWAPS_AXES:
            need_w, need_h = need_h, need_w
        size = item.stored_size
        if size[0] >= 2 * need_w and size[1] >= 2 * need_h:
            return draft_scale(size, (need_w, need_h))
        return 1

    def __call__(self, items: list[Encoded]) -> DeviceDecoded:
        images: list[torch.Tensor] = []
        greys: list[torch.Tensor] = []
        ok: list[int] = []
        failed: list[int] = []
        for chunk in self._chunks(items):
            for index, pixels in zip(chunk, self._decode([items[i] for i in chunk])):
                if pixels is None:
                    failed.append(index)
                    continue
                model_input, grey = self._process(pixels, items[index])
                images.append(model_input)
                greys.append(grey)
                ok.append(index)
        stacked = torch.stack(images) if images else None
        phashes = phash_orientations(torch.stack(greys) if greys else torch.zeros(0, 32, 32, dtype=torch.float64))
        return DeviceDecoded(stacked, phashes, ok, failed)

    def _chunks(self, items: list[Encoded]) -> list[list[int]]:
        chunks: list[list[int]] = [[]]
        pixels = 0
        for i, item in enumerate(items):
            n = item.width * item.height
            if chunks[-1] and pixels + n > self.max_batch_pixels:
                chunks.append([])
                pixels = 0
            chunks[-1].append(i)
            pixels += n
        return [c for c in chunks if c]

    def _decode(self, items: list[Encoded]) -> list[torch.Tensor | None]:
        """All in one decode call; when it raises, one by one, and None for each that fails."""
        data = [torch.frombuffer(bytearray(item.data), dtype=torch.uint8) for item in items]
        try:
            out = decode_jpeg(data, device=self.device, mode=ImageReadMode.RGB, apply_exif_orientation=False)
            return [self._checked(x, item) for x, item in zip(out, items)]
        except RuntimeError:
            pass
        results: list[torch.Tensor | None] = []
        for tensor, item in zip(data, items):
            try:
                x = decode_jpeg(tensor, device=self.device, mode=ImageReadMode.RGB, apply_exif_orientation=False)
                results.append(self._checked(x, item))
            except RuntimeError:
                results.append(None)
        return results

    @staticmethod
    def _checked(x: torch.Tensor, item: Encoded) -> torch.Tensor | None:
        w, h = item.stored_size
        return x if tuple(x.shape) == (3, h, w) else None

    def _process(self, pixels: torch.Tensor, item: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 model input, 32×32 grey) of one decoded image, in the stored orientation."""
        s = self.scale(item)
        if s > 1:
            pixels = torch.floor(box_reduce(pixels, s, s) + 0.5).to(torch.uint8)
        drafted = orient(pixels, item.orientation)
        model_input = self.preprocess.tensor(drafted)
        return model_input, grey32(drafted)
