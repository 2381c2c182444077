"""DINO's weighted k-NN classifier on cosine similarity, with ties broken the same way for every batching."""

from __future__ import annotations

import numpy as np
import torch

KS = (10, 20, 100, 200)  # DINO's eval_knn.py
TEMPERATURE = 0.07  # DINO's vote temperature
TOP = 5  # classes ranked per image: top-1 and top-5 accuracy


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, num_classes: int,
                ks: tuple[int, ...] = KS, temperature: float = TEMPERATURE,
                batch_bytes: int = 1 << 28) -> dict[int, np.ndarray]:
    """DINO's weighted k-NN: per k, (N_val, min(5, C)) classes ranked by Σ exp(cos/T) over the k neighbours.

    Neighbours rank by similarity, ties by lower train row; classes by summed vote, ties by lower class
    index; slots past the classes that got a vote are -1 (never counted as hits). k is capped at the train size.
    """
    n = len(train_x)
    kmax = min(max(ks), n)
    top = min(TOP, num_classes)
    out = {k: np.empty((len(val_x), top), dtype=np.int64) for k in ks}
    step = max(1, min(4096, batch_bytes // (4 * max(n, 1))))
    for start in range(0, len(val_x), step):
        sl = slice(start, start + step)
        nb, sims = neighbours(val_x[sl], train_x, kmax)
        for k in ks:
            kk = min(k, n)
            out[k][sl] = vote(sims[:, :kk], train_y[nb[:, :kk]], num_classes, temperature, top)
    return out


def neighbours(q: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar train rows of each query, ranked, ties by row; similarities exact to float32.

    float32 BLAS scores of the same pair vary with batch and row position (~1e-7), so every row within a
    proven error bound of the k-th is re-scored in float64 and rounded: a query's neighbours and their order
    do not depend on batching, and duplicate train vectors tie exactly.
    """
    n, d = train.shape
    s32 = q @ train.T
    cand = np.broadcast_to(np.arange(n), s32.shape)
    if k < n:
        tol = (d + 2) * np.finfo(np.float32).eps  # |float32 dot - exact| <= d·u·|a||b| for unit vectors
        width = min(n, k + 16)
        while True:  # widen until every row that could be in the top k is among the candidates
            vals, idx = torch.topk(torch.from_numpy(s32), width, dim=1)
            if width == n or bool((vals[:, -1] < vals[:, k - 1] - tol).all()):
                break
            width = min(n, 2 * width)
        cand = idx.numpy()
    exact = exact_similarity(q, train, cand)
    order = np.lexsort((cand, -exact), axis=1)[:, :k]
    return np.take_along_axis(cand, order, 1), np.take_along_axis(exact, order, 1)


def exact_similarity(q: np.ndarray, train: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """float32(float64 dot) of each query with its candidate train rows, in bounded-memory chunks."""
    out = np.empty(cand.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, cand.shape[1] * train.shape[1]))
    for s in range(0, len(q), step):
        out[s:s + step] = np.einsum("bmd,bd->bm", train[cand[s:s + step]], q[s:s + step], dtype=np.float64)
    return out


def vote(sims: np.ndarray, labels: np.ndarray, num_classes: int, temperature: float, top: int) -> np.ndarray:
    """Each neighbour adds exp(sim/T) to its class; the `top` best classes (-1 where no vote was cast)."""
    b, k = labels.shape
    weights = np.exp(sims.astype(np.float64) / temperature)
    flat = (np.arange(b)[:, None] * num_classes + labels).ravel()
    scores = np.bincount(flat, weights=weights.ravel(), minlength=b * num_classes).reshape(b, num_classes)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return np.where(np.take_along_axis(scores, ranked, 1) > 0, ranked, -1)


def accuracy(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(top-1, top-5) of ranked predictions (N, ≤5)."""
    hit = pred == y[:, None]
    return float(hit[:, 0].mean()), float(hit.any(1).mean())
