"""Cheap image quality signals (`--extras stats`), computed in the loader worker on the model's uint8 input.

The working copy is the preprocessed uint8 CHW image the model sees (resized and centre-cropped: 224×224 at
the default resolution), sampled every f-th pixel in both directions, f = max(1, short side // WORK_SIDE):
112×112 at 224 px. Sampling (not averaging) keeps the fine detail the sharpness measures and costs one strided
copy. grey = 0.299 R + 0.587 G + 0.114 B in float32 on [0, 255]. STATS_DEFINITION states every signal; the
provenance records it and docs/FORMAT.md §2 repeats it for readers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

STATS_COLUMNS = ("sharpness", "brightness", "contrast", "colorfulness", "aspect", "flat_share")
WORK_SIDE = 112  # the working copy's short side is the model input's divided by a whole factor, down to this
FLAT_LEVEL = 2.0  # a pixel is flat when the grey range (max - min) of its 3x3 neighbourhood is at most this

STATS_DEFINITION = {
    "working_image": f"the model's uint8 input (resized, centre-cropped) sampled every f-th pixel, f = max(1, "
                     f"short side // {WORK_SIDE}) (224 px input: 112x112); grey = 0.299R + 0.587G + 0.114B, "
                     "float32 on [0, 255]",
    "sharpness": "variance of the 3x3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] of grey over interior pixels",
    "brightness": "mean grey / 255",
    "contrast": "standard deviation of grey / 255",
    "colorfulness": "Hasler-Suesstrunk: sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G, "
                    "yb = (R + G) / 2 - B, on [0, 255]",
    "aspect": "width / height of the original image (after EXIF orientation)",
    "flat_share": f"share of interior pixels whose 3x3 neighbourhood grey range (max - min) is <= {FLAT_LEVEL:g}",
}
# Rows of grey, rg and yb as linear maps of (R, G, B): one matrix product gives all three.
_MIX = np.array([[0.299, 0.587, 0.114], [1.0, -1.0, 0.0], [0.5, 0.5, -1.0]], np.float32)


def working_copy(chw: np.ndarray) -> np.ndarray:
    """The (3, h, w) uint8 working copy of a (3, H, W) uint8 model input."""
    step = max(1, min(chw.shape[1:]) // WORK_SIDE)
    return np.ascontiguousarray(chw[:, ::step, ::step])


def image_stats(chw: np.ndarray, width: int, height: int) -> tuple[float, ...]:
    """STATS_COLUMNS, in that order, of a (3, H, W) uint8 model input whose original image is width × height.

    About 0.1–0.3 ms of one thread at 224 px (the vectors are flat, so every neighbour is a contiguous slice)."""
    sub = working_copy(chw)
    _, h, w = sub.shape
    mixed = _MIX @ sub.reshape(3, -1).astype(np.float32)  # grey, rg, yb
    n = mixed.shape[1]
    mean = (mixed @ _ones(n)) / n
    centred = mixed - mean[:, None]
    var = np.einsum("ij,ij->i", centred, centred) / n
    colorful = float(np.sqrt(var[1] + var[2]) + 0.3 * np.hypot(mean[1], mean[2]))
    sharpness, flat = _neighbourhood(mixed[0], h, w)
    return sharpness, float(mean[0]) / 255.0, float(np.sqrt(var[0])) / 255.0, colorful, width / height, flat


def _neighbourhood(grey: np.ndarray, h: int, w: int) -> tuple[float, float]:
    """(Laplacian variance, flat share) over the interior of an h × w grey image given flat (row-major).

    Row y ± 1 is the flat vector shifted by ± w, column x ± 1 by ± 1; the slices cover rows 1..h-2 whole, and
    the two border columns (whose ± 1 neighbours wrap to the next row) are weighted out by `_interior`."""
    if h < 3 or w < 3:
        return 0.0, 1.0
    k = (h - 2) * w
    up, mid, down = grey[0:k], grey[w:w + k], grey[2 * w:2 * w + k]
    lap = up + down
    lap += grey[w - 1:w - 1 + k]
    lap += grey[w + 1:w + 1 + k]
    lap -= 4.0 * mid
    inside = _interior(h, w)
    count = (h - 2) * (w - 2)
    lap -= float(lap @ inside) / count
    sharpness = float((lap * lap) @ inside) / count
    hi = np.maximum(np.maximum(up, mid), down)
    lo = np.minimum(np.minimum(up, mid), down)
    hi = np.maximum(np.maximum(hi[:-2], hi[1:-1]), hi[2:])  # centred on positions 1 .. k-2 of the slices
    lo = np.minimum(np.minimum(lo[:-2], lo[1:-1]), lo[2:])
    hi -= lo
    flat = float((hi <= FLAT_LEVEL) @ inside[1:-1]) / count
    return sharpness, flat


@lru_cache(maxsize=16)
def _ones(n: int) -> np.ndarray:
    return np.ones(n, np.float32)


@lru_cache(maxsize=16)
def _interior(h: int, w: int) -> np.ndarray:
    """1 for the interior columns of rows 1..h-2 (flat, row-major), 0 for the two border columns."""
    mask = np.zeros((h - 2, w), np.float32)
    mask[:, 1:-1] = 1.0
    return mask.ravel()
