"""Linear probe (pipeline.evaluate.linear) against a NumPy/SciPy fit of the same objective."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from pipeline.evaluate.labels import stratified_val
from pipeline.evaluate.linear import WEIGHT_DECAYS, choose_weight_decay, fit_linear, linear_probe


def standardise(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """x standardised with the mean and population std of `ref`, in float64."""
    ref = ref.astype(np.float32).astype(np.float64)
    return (x.astype(np.float32).astype(np.float64) - ref.mean(0)) / ref.std(0)


def objective(params: np.ndarray, z: np.ndarray, y: np.ndarray, c: int, wd: float) -> tuple[float, np.ndarray]:
    """mean cross-entropy + wd/2·|W|² (bias not decayed) and its gradient, in float64."""
    d = z.shape[1]
    w, b = params[:c * d].reshape(c, d), params[c * d:]
    logits = z @ w.T + b
    loss = -log_softmax(logits, axis=1)[np.arange(len(y)), y].mean() + 0.5 * wd * (w ** 2).sum()
    err = softmax(logits, axis=1)
    err[np.arange(len(y)), y] -= 1
    err /= len(y)
    return loss, np.concatenate([(err.T @ z + wd * w).ravel(), err.sum(0)])


def reference_fit(x: np.ndarray, y: np.ndarray, c: int, wd: float) -> tuple[np.ndarray, np.ndarray]:
    z = standardise(x, x)
    res = minimize(objective, np.zeros(c * x.shape[1] + c), args=(z, y, c, wd), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15})
    assert res.success, res.message
    d = x.shape[1]
    return res.x[:c * d].reshape(c, d), res.x[c * d:]


@pytest.mark.parametrize("wd", [1e-3, 1e-1])
def test_fit_linear_reaches_the_regularised_optimum(blobs, wd):
    x, y = blobs(240, 4, 6, noise=1.5, seed=1)  # overlapping classes: the optimum is not at infinity
    x = 3 * x + 10  # standardisation must undo scale and offset
    model = fit_linear(x.astype(np.float32), y, 4, wd, max_iter=200)
    w_ref, b_ref = reference_fit(x, y, 4, wd)
    new, _ = blobs(50, 4, 6, noise=1.5, seed=2)
    new = (3 * new + 10).astype(np.float32)
    probs = torch.softmax(model.logits(new), 1).numpy()
    probs_ref = softmax(standardise(new, x) @ w_ref.T + b_ref, axis=1)
    np.testing.assert_allclose(probs, probs_ref, atol=2e-3)
    # the gradient of the objective, in float64, vanishes at the fitted weights
    params = np.concatenate([model.weight.numpy().ravel(), model.bias.numpy()]).astype(np.float64)
    loss, grad = objective(params, standardise(x, x), y, 4, wd)
    assert np.abs(grad).max() < 1e-4, np.abs(grad).max()
    assert loss == pytest.approx(objective(np.concatenate([w_ref.ravel(), b_ref]), standardise(x, x), y, 4, wd)[0],
                                 rel=1e-5)


def test_weight_decay_sweep_scores_each_decay_on_the_held_out_rows(blobs):
    x, y = blobs(200, 3, 20, noise=3.0, seed=3)  # few rows, many noisy dims: the decay matters
    x = x.astype(np.float32)
    held = stratified_val(y, ("a", "b", "c"), 0.25, seed=0, salt="heldout")
    best, sweep = choose_weight_decay(x, y, 3, WEIGHT_DECAYS, held, max_iter=200)
    assert [r["weight_decay"] for r in sweep] == sorted(WEIGHT_DECAYS, reverse=True)  # strongest first
    for r in sweep:  # warm starts reach the same optimum as a cold fit: the same held-out numbers
        cold = fit_linear(x[~held], y[~held], 3, r["weight_decay"], max_iter=200).logits(x[held]).numpy()
        loss = -log_softmax(cold.astype(np.float64), axis=1)[np.arange(held.sum()), y[held]].mean()
        assert r["heldout_loss"] == pytest.approx(loss, rel=1e-3), r
        assert abs(r["heldout_top1"] - (cold.argmax(1) == y[held]).mean()) <= 1 / held.sum(), r
    top = max(r["heldout_top1"] for r in sweep)
    assert best == min((r for r in sweep if r["heldout_top1"] == top), key=lambda r: r["heldout_loss"])["weight_decay"]
    assert len({r["heldout_top1"] for r in sweep}) > 1  # the sweep saw a difference to choose from


def test_linear_probe_ranks_val_classes_by_the_refit_logits(blobs):
    x, y = blobs(300, 7, 10, noise=1.0, seed=4)
    x = x.astype(np.float32)
    train_x, train_y, val_x = x[:240], y[:240], x[240:]
    classes = tuple(f"c{i}" for i in range(7))
    threads = torch.get_num_threads()
    ranked, record = linear_probe(train_x, train_y, val_x, classes, weight_decays=(1e-4, 1e-2),
                                  heldout_fraction=0.2, seed=0, max_iter=50)
    assert torch.get_num_threads() == threads  # the one-thread block restores the setting
    held = stratified_val(train_y, classes, 0.2, 0, salt="heldout")
    assert record["heldout_rows"] == int(held.sum()) == sum(round(n * 0.2) for n in np.bincount(train_y))
    assert record["fit_rows"] == 240 - record["heldout_rows"]
    assert record["weight_decay"] in (1e-4, 1e-2) and len(record["sweep"]) == 2
    assert ranked.shape == (60, 5) and all(len(set(r)) == 5 for r in ranked.tolist())
    logits = fit_linear(train_x, train_y, 7, record["weight_decay"], 50).logits(val_x).numpy()
    np.testing.assert_array_equal(ranked[:, 0], logits.argmax(1))
    ranked_logits = np.take_along_axis(logits, ranked, 1)
    assert (np.diff(ranked_logits, axis=1) <= 1e-5).all()  # decreasing logits
    rest = np.ones_like(logits, dtype=bool)
    np.put_along_axis(rest, ranked, False, 1)
    assert (logits[rest].reshape(60, 2).max(1) <= ranked_logits[:, -1] + 1e-5).all()  # the 5 best of 7
    assert (ranked[:, 0] == y[240:]).mean() >= 0.8  # the probe learnt (chance: 1/7)


def test_too_small_a_train_set_skips_the_sweep_and_says_so(caplog):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    y = np.arange(4)  # one image per class: nothing can be held out
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.linear"):
        ranked, record = linear_probe(x, y, x, ("a", "b", "c", "d"), heldout_fraction=0.2, seed=0)
    assert record["sweep"] == [] and record["heldout_rows"] == 0 and record["fit_rows"] == 4
    assert record["weight_decay"] == sorted(WEIGHT_DECAYS)[len(WEIGHT_DECAYS) // 2] == 1e-3
    assert "too small to hold out" in caplog.text and "1e-03" not in caplog.text and "0.001" in caplog.text
    assert ranked.shape == (4, 4) and ranked[:, 0].tolist() == [0, 1, 2, 3]  # fits its own train rows
