"""pHashes on the model's device from decoded pixels, step for step as io.phash's fast path (Pillow's integers).

io.phash hashes the (drafted) RGB image by Pillow's box `reduce`, grey "L" and a Lanczos resize to 32×32 over
the same source box; here each step is done with Pillow's own arithmetic (rounded box means, the ITU-R 601-2
integer grey, Lanczos with Pillow's 22-bit fixed-point coefficients and 8-bit rounding between its two
passes), so the 32×32 grey images are Pillow's but for a rare 1-level rounding, and one DCT for the whole
batch gives the same bits but where a coefficient lies at the median.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from pipeline.io.phash import BIT_WEIGHTS, DCT_LOW, FAST_REDUCING_GAP, GREY_SIZE, ORIENTATION_SIGNS

_PRECISION_BITS = 22  # Pillow's Resample.c for 8-bit images: 32 - 8 - 2
_LANCZOS_SUPPORT = 3.0


def _lanczos(x: np.ndarray) -> np.ndarray:
    out = np.sinc(x) * np.sinc(x / _LANCZOS_SUPPORT)
    return np.where(np.abs(x) < _LANCZOS_SUPPORT, out, 0.0)


@lru_cache(maxsize=1024)
def lanczos_weights(in_size: int, out_size: int, box_end: float) -> np.ndarray:
    """(out_size, in_size) integer weights of Pillow's Lanczos resample of source span [0, box_end) onto
    out_size pixels: Resample.c's precompute_coeffs + normalize_coeffs_8bpc, in float64 (exact integers)."""
    scale = box_end / out_size
    filterscale = max(1.0, scale)
    support = _LANCZOS_SUPPORT * filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(0, int(center - support + 0.5))
        xmax = min(in_size, int(center + support + 0.5))
        k = _lanczos((np.arange(xmin, xmax) - center + 0.5) / filterscale)
        total = k.sum()
        if total != 0.0:
            k = k / total
        # C's (int) truncates toward zero after adding ±0.5: round half away from zero
        weights[xx, xmin:xmax] = np.trunc(k * (1 << _PRECISION_BITS) + np.where(k < 0, -0.5, 0.5))
    weights.flags.writeable = False  # shared by the cache
    return weights


def _fixed_point(x: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8 of an accumulated fixed-point sum (which started at half a unit)."""
    return torch.floor((x + (1 << (_PRECISION_BITS - 1))) / (1 << _PRECISION_BITS)).clamp_(0, 255)


def box_reduce(x: torch.Tensor, fy: int, fx: int) -> torch.Tensor:
    """Mean of each fy×fx block, the last partial blocks over their own pixels (ceil sizes), as float: Pillow's
    `reduce` and libjpeg's DCT-scaled output (draft) both have these sizes and this support."""
    if fx == 1 and fy == 1:
        return x.float()
    return torch.nn.functional.avg_pool2d(x.float()[None], (fy, fx), ceil_mode=True)[0]


def grey_l(rgb: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB → "L": (R·19595 + G·38470 + B·7471 + 2^15) >> 16 on 0..255 integers, as float64."""
    r, g, b = rgb.to(torch.float64).unbind(0)
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def pillow_reduce(rgb: torch.Tensor, fy: int, fx: int) -> torch.Tensor:
    """Pillow's `Image.reduce((fx, fy))` of a uint8 3×H×W tensor, as float: each block's sum, plus half its
    pixel count, times Pillow's float32 reciprocal (Reduce.c's division_UINT32), shifted down 24 bits."""
    x = rgb.float()[None]
    sums = torch.nn.functional.avg_pool2d(x, (fy, fx), ceil_mode=True, divisor_override=1)[0].double()
    counts = torch.nn.functional.avg_pool2d(torch.ones_like(x[:, :1]), (fy, fx), ceil_mode=True,
                                            divisor_override=1)[0].double()
    multiplier = torch.floor(torch.from_numpy(_reciprocal(np.arange(fx * fy + 1))).to(sums.device)[counts.long()])
    return torch.floor((sums + torch.floor(counts / 2)) * multiplier / (1 << 24))


def _reciprocal(n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(n > 0, np.float32(2.0**32) / (np.float32(256) * n.astype(np.float32)), 0).astype(np.float64)


def grey32(rgb: torch.Tensor, reducing_gap: float = FAST_REDUCING_GAP) -> torch.Tensor:
    """32×32 float64 grey image of a uint8 3×H×W tensor (the drafted, upright image), as io.phash._grey32."""
    h, w = rgb.shape[-2:]
    fx, fy = max(1, int(w / GREY_SIZE / reducing_gap)), max(1, int(h / GREY_SIZE / reducing_gap))
    if fx == 1 and fy == 1:
        grey, box_w, box_h = grey_l(rgb), float(w), float(h)
    else:
        grey = grey_l(pillow_reduce(rgb, fy, fx))
        box_w, box_h = w / fx, h / fy
    gh, gw = grey.shape
    dev = grey.device
    if (gw, gh) == (GREY_SIZE, GREY_SIZE) and (box_w, box_h) == (GREY_SIZE, GREY_SIZE):
        return grey
    if gw != GREY_SIZE or box_w != gw:  # Pillow skips a pass whose size and box already match
        grey = _fixed_point(grey @ torch.tensor(lanczos_weights(gw, GREY_SIZE, box_w)).to(dev).T)
    if gh != GREY_SIZE or box_h != gh:
        grey = _fixed_point(torch.tensor(lanczos_weights(gh, GREY_SIZE, box_h)).to(dev) @ grey)
    return grey


def phash_orientations(greys: torch.Tensor) -> np.ndarray:
    """(N, 4) uint64 pHashes (image, mirror, flip, rot180) of N 32×32 grey images, with one batched DCT;
    io.phash.phash64_orientations' convention: bit 63 is DC, row-major 8×8 block, above the median is 1."""
    if greys.shape[0] == 0:
        return np.zeros((0, 4), dtype=np.uint64)
    dct = torch.from_numpy(DCT_LOW).to(greys.device)
    low = dct @ greys.to(torch.float64) @ dct.T  # (N, 8, 8): one batched matmul pair for the batch
    low = torch.where(low.abs() < 1e-6, torch.zeros_like(low), low)
    blocks = (low[:, None] * torch.from_numpy(ORIENTATION_SIGNS).to(low.device)).reshape(-1, 4, 64)
    ordered = blocks.sort(dim=-1).values
    median = (ordered[..., 31] + ordered[..., 32]) / 2  # the two middle values' mean, as numpy's median
    bits = (blocks > median[..., None]).cpu().numpy()
    return (bits * BIT_WEIGHTS).sum(axis=-1, dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between two uint64 arrays, element by element."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)
