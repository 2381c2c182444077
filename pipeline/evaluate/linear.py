"""Linear probe: multinomial logistic regression on standardised features, fitted by full-batch L-BFGS.

The weight decay is chosen on a stratified held-out part of train, then the probe is refit on all of train.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.evaluate.knn import TOP
from pipeline.evaluate.labels import stratified_val

log = logging.getLogger(__name__)

WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
MAX_ITER = 100  # L-BFGS iterations per fit
_CHUNK = 65536  # rows per logits chunk (bounds memory at CHUNK x classes floats)
_SMALL = 1 << 24  # rows x dim x classes below which torch runs on one thread (sync costs more than it saves)


@dataclass(frozen=True)
class LinearModel:
    """A fitted probe: the standardisation of train, then class logits = z @ weight.T + bias."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(x) - self.mean) / self.scale) @ self.weight.T + self.bias


def fit_linear(x: np.ndarray, y: np.ndarray, num_classes: int, weight_decay: float, max_iter: int = MAX_ITER,
               init: LinearModel | None = None) -> LinearModel:
    """Multinomial logistic regression on standardised features, full-batch L-BFGS (convex: one optimum).

    Loss = mean cross-entropy + weight_decay/2·|W|² (bias not decayed); zero init, or warm start from `init`.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y)
    mean, scale = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-6)
    z = (xt - mean) / scale
    w = torch.zeros(num_classes, x.shape[1]) if init is None else init.weight.clone()
    b = torch.zeros(num_classes) if init is None else init.bias.clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-10)
    n = len(z)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        total = 0.0
        for s in range(0, n, _CHUNK):
            loss = F.cross_entropy(z[s:s + _CHUNK] @ w.T + b, yt[s:s + _CHUNK], reduction="sum") / n
            loss.backward()
            total += loss.item()
        reg = 0.5 * weight_decay * w.pow(2).sum()
        reg.backward()
        return torch.tensor(total + reg.item())

    opt.step(closure)
    return LinearModel(mean, scale, w.detach(), b.detach())


def choose_weight_decay(x: np.ndarray, y: np.ndarray, num_classes: int, weight_decays: tuple[float, ...],
                        held: np.ndarray, max_iter: int = MAX_ITER) -> tuple[float, list[dict]]:
    """Fit on the rows not `held`, score on the held ones; the decay with the best held-out top-1 (then the
    lowest held-out loss) and the sweep. Strongest decay first: each fit warm-starts the next."""
    sweep, model = [], None
    for wd in sorted(weight_decays, reverse=True):
        model = fit_linear(x[~held], y[~held], num_classes, wd, max_iter, init=model)
        logits = model.logits(x[held])
        top1 = float((logits.argmax(1).numpy() == y[held]).mean())
        loss = float(F.cross_entropy(logits, torch.from_numpy(y[held])))
        sweep.append({"weight_decay": wd, "heldout_top1": top1, "heldout_loss": loss})
    best = max(sweep, key=lambda r: (r["heldout_top1"], -r["heldout_loss"]))["weight_decay"]
    return best, sweep


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, classes: tuple[str, ...], *,
                 weight_decays: tuple[float, ...] = WEIGHT_DECAYS, heldout_fraction: float, seed: int,
                 max_iter: int = MAX_ITER) -> tuple[np.ndarray, dict]:
    """Choose the weight decay on a stratified held-out part of train, refit on all of train, rank val classes.

    Returns (N_val, min(5, C)) class indices by decreasing logit (ties: lower class) and the probe's record.
    """
    num_classes = len(classes)
    held = stratified_val(train_y, classes, heldout_fraction, seed, salt="heldout")
    sweep: list[dict] = []
    with _torch_threads(1 if train_x.size * num_classes < _SMALL else None):
        if held.any():
            best, sweep = choose_weight_decay(train_x, train_y, num_classes, weight_decays, held, max_iter)
        else:
            best = sorted(weight_decays)[len(weight_decays) // 2]
            log.warning("train is too small to hold out a part for the weight-decay sweep: using %g", best)
        model = fit_linear(train_x, train_y, num_classes, best, max_iter)
        ranked = torch.argsort(-model.logits(val_x), dim=1, stable=True)[:, :min(TOP, num_classes)].numpy()
    record = {"weight_decay": best, "sweep": sweep, "fit_rows": int((~held).sum()), "heldout_rows": int(held.sum()),
              "optimizer": f"L-BFGS full batch, at most {max_iter} iterations, standardised features"}
    return ranked, record


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run a block on n torch threads (None: unchanged); small problems are faster on one, on a busy CPU much."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
