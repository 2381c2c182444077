"""64-bit DCT perceptual hash (the pHash of imagehash): 32×32 grey, 2-D DCT, 8×8 low band vs its median."""

from __future__ import annotations

import numpy as np
from PIL import Image

GREY_SIZE = 32
FAST_REDUCING_GAP = 2.0
_K = 8
# Orthogonal-up-to-scale DCT-II basis: C[k, n] = cos(pi * (2n + 1) * k / (2N)); the scale does not change
# which coefficients lie above the median, so this matches scipy.fftpack.dct as imagehash uses it.
_DCT = np.cos(np.pi * (2 * np.arange(GREY_SIZE)[None, :] + 1) * np.arange(GREY_SIZE)[:, None] / (2 * GREY_SIZE))
DCT_LOW = np.ascontiguousarray(_DCT[:_K])  # only the 8 lowest frequencies are kept: 16× fewer products
BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


# Mirroring an image left-right multiplies DCT column (horizontal frequency) k by (-1)^k; flipping it
# upside down does the same to rows; turning it 180° does both. Transposing it transposes the block.
_ALT = np.where(np.arange(_K) % 2 == 0, 1.0, -1.0)
_MIRROR = _ALT[None, :]
_FLIP = _ALT[:, None]
_ROT180 = _ALT[:, None] * _ALT[None, :]
ORIENTATION_SIGNS = np.stack([np.ones((_K, _K)), np.broadcast_to(_MIRROR, (_K, _K)), np.broadcast_to(_FLIP, (_K, _K)),
                              _ROT180])
_TRANSPOSE = np.arange(64).reshape(8, 8).T.ravel()  # bit (row-major) position after transposing


def phash64(img: Image.Image) -> int:
    """Unsigned 64-bit pHash; bit 63 is the DC coefficient, row-major over the 8×8 low-frequency block."""
    return phash64_pair(img)[0]


def phash64_pair(img: Image.Image) -> tuple[int, int]:
    """(pHash of the image, pHash of its left-right mirror) from one DCT: mirrored copies then match."""
    return phash64_orientations(img)[:2]


def phash64_orientations(img: Image.Image, reducing_gap: float | None = None) -> tuple[int, int, int, int]:
    """pHashes of the image, its mirror, its upside-down flip and its 180° turn, from one DCT; with
    `transpose64` of each, all 8 orientations (the dihedral group) of a copy can be matched.

    `reducing_gap` (Pillow's): box-reduce the grey image by a whole factor first, down to no less than that
    many times 32 px, then Lanczos as imagehash. None is imagehash's exact algorithm; extraction uses
    FAST_REDUCING_GAP (faster; the hash stays within a few bits of imagehash's, well under the duplicate
    threshold of 8; tests/io check the bound)."""
    grey = np.asarray(_grey32(img, reducing_gap), dtype=np.float64)
    low = DCT_LOW @ grey @ DCT_LOW.T
    low[np.abs(low) < 1e-6] = 0.0  # exact zeros (flat images) must not become ±1e-12 noise that flips bits
    blocks = (low[None] * ORIENTATION_SIGNS).reshape(4, 64)
    bits = blocks > np.median(blocks, axis=1, keepdims=True)
    return tuple(int(v) for v in (bits * BIT_WEIGHTS).sum(axis=1, dtype=np.uint64))


def _grey32(img: Image.Image, reducing_gap: float | None) -> Image.Image:
    """The 32×32 grey image the DCT runs on. With `reducing_gap`, the colour image is box-reduced by Pillow's
    own whole factors first and turned grey after (both steps are linear: equal up to rounding, and the grey
    conversion then touches ~1/25 of the pixels of a 512×341 photo), then Lanczos over the same source box
    Pillow's `reducing_gap` would use."""
    if reducing_gap is None or img.mode not in ("RGB", "RGBX", "L"):
        return img.convert("L").resize((GREY_SIZE, GREY_SIZE), Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
    w, h = img.size
    fx, fy = max(1, int(w / GREY_SIZE / reducing_gap)), max(1, int(h / GREY_SIZE / reducing_gap))
    if fx == 1 and fy == 1:
        return img.convert("L").resize((GREY_SIZE, GREY_SIZE), Image.Resampling.LANCZOS)
    small = img.reduce((fx, fy)).convert("L")
    return small.resize((GREY_SIZE, GREY_SIZE), Image.Resampling.LANCZOS, box=(0, 0, w / fx, h / fy))


def transpose64(hashes: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """pHashes of the transposed images (a pure bit permutation: the 8×8 block is transposed). In chunks: the
    bits of one row take 512 bytes, so 10M rows at once would take 15 GB."""
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    out = np.empty(len(h), np.uint64)
    shifts = np.arange(63, -1, -1, dtype=np.uint64)
    for s in range(0, len(h), chunk):
        bits = (h[s:s + chunk, None] >> shifts) & np.uint64(1)
        out[s:s + chunk] = (bits[:, _TRANSPOSE] * BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)
    return out.reshape(np.shape(hashes))


def hamming64(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")
