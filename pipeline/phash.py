"""64-bit DCT perceptual hash (the pHash of imagehash): 32×32 grey, 2-D DCT, 8×8 low band vs its median."""

from __future__ import annotations

import numpy as np
from PIL import Image

_N = 32
_K = 8
# Orthogonal-up-to-scale DCT-II basis: C[k, n] = cos(pi * (2n + 1) * k / (2N)); the scale does not change
# which coefficients lie above the median, so this matches scipy.fftpack.dct as imagehash uses it.
_DCT = np.cos(np.pi * (2 * np.arange(_N)[None, :] + 1) * np.arange(_N)[:, None] / (2 * _N))
_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def phash64(img: Image.Image) -> int:
    """Unsigned 64-bit pHash; bit 63 is the DC coefficient, row-major over the 8×8 low-frequency block."""
    grey = np.asarray(img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS), dtype=np.float64)
    coeffs = _DCT @ grey @ _DCT.T
    low = coeffs[:_K, :_K]
    bits = (low > np.median(low)).ravel()
    return int(np.sum(_WEIGHTS[bits], dtype=np.uint64))


def hamming64(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")
