"""Data builders shared by the evaluate tests, as fixtures.

Labelled feature roots, labels files, Gaussian blobs, and the brute-force k-NN reference.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_feature_root


def _brute_knn(train: np.ndarray, train_y: np.ndarray, val: np.ndarray, num_classes: int, k: int,
               temperature: float) -> np.ndarray:
    """The voting rule written out per query: k most similar (ties: lower row), Σ exp(sim/T) per class."""
    top = min(5, num_classes)
    out = np.full((len(val), top), -1, dtype=np.int64)
    t64 = train.astype(np.float64)
    for i, q in enumerate(val):
        sims = (t64 @ q.astype(np.float64)).astype(np.float32)
        order = sorted(range(len(train)), key=lambda j: (-sims[j], j))[:k]
        scores: dict[int, float] = {}
        for j in order:
            scores[int(train_y[j])] = scores.get(int(train_y[j]), 0.0) + math.exp(float(sims[j]) / temperature)
        ranked = sorted(scores, key=lambda c: (-scores[c], c))[:top]
        out[i, :len(ranked)] = ranked
    return out


@pytest.fixture
def brute_knn() -> Callable[..., np.ndarray]:
    """brute_knn(train, train_y, val, num_classes, k, temperature) -> (N_val, min(5, C)) ranked classes."""
    return _brute_knn


@pytest.fixture
def labelled_root() -> Callable[..., list[str]]:
    """labelled_root(root, x, y, names=None, **kw): a feature root whose keys follow the ImageFolder layout
    `<class>/img<i>.jpg` (class `c<label:02d>` unless `names` gives them); returns the keys."""

    def make(root: Path, x: np.ndarray, y: np.ndarray, names: list[str] | None = None, **kwargs) -> list[str]:
        keys = [f"{names[c] if names else f'c{c:02d}'}/img{i:05d}.jpg" for i, c in enumerate(y)]
        return write_feature_root(root, x.astype(np.float32), keys=keys, **kwargs)

    return make


@pytest.fixture
def labels_csv() -> Callable[[Path, list[tuple]], Path]:
    """labels_csv(path, rows): a labels file with columns key,label[,split] (as many as the rows have)."""

    def make(path: Path, rows: list[tuple]) -> Path:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "label", "split"][:len(rows[0])])
            w.writerows(rows)
        return path

    return make


@pytest.fixture
def blobs() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """blobs(n, classes, dim, noise, seed): class c around a random centre, (x float64, y int64)."""

    def make(n: int, classes: int, dim: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, classes, n)
        centres = rng.normal(size=(classes, dim))
        return centres[y] + noise * rng.normal(size=(n, dim)), y

    return make
