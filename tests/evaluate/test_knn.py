"""Weighted k-NN (pipeline.evaluate.knn) against brute-force NumPy: neighbours, votes, predictions, accuracy."""

from __future__ import annotations

import numpy as np

from pipeline.evaluate.knn import TOP, accuracy, exact_similarity, knn_predict, neighbours, vote
from tests.conftest import clustered_vectors


def test_knn_equals_brute_force_with_ties_and_k_capped(brute_knn):
    rng = np.random.default_rng(7)
    train = clustered_vectors(150, 16, 6, spread=0.6, seed=1)
    twins = [40, 90, 149, *range(100, 130)]
    train[twins] = train[3]  # 33 exact duplicates of row 3, in all classes: ties broken by lower row
    train_y = rng.integers(0, 7, len(train))
    val = clustered_vectors(60, 16, 6, spread=0.6, seed=2)
    val[:5] = train[3]  # queries whose nearest neighbours are the tied duplicates
    ks = (1, 3, 10, 20, 200)  # 200 > 150 train rows: capped
    preds = knn_predict(train, train_y, val, 7, ks, 0.07, batch_bytes=4 * 150 * 7)  # 7 queries per batch
    whole = knn_predict(train, train_y, val, 7, ks, 0.07)
    val_y = rng.integers(0, 7, len(val))
    for k in ks:
        ref = brute_knn(train, train_y, val, 7, min(k, 150), 0.07)
        np.testing.assert_array_equal(preds[k], ref, err_msg=f"k={k}")
        np.testing.assert_array_equal(whole[k], ref, err_msg=f"k={k} (one batch)")
        hits = ref == val_y[:, None]
        assert accuracy(preds[k], val_y) == (hits[:, 0].mean(), hits.any(1).mean())
    # k=1: the first of the 34 tied copies (row 3) decides; k=20: rows 3, 40, 90, 100..116 vote equally
    assert (preds[1][:5, 0] == train_y[3]).all()
    votes = np.bincount(train_y[[3, 40, 90, *range(100, 117)]], minlength=7)
    assert preds[20][0, 0] == np.flatnonzero(votes == votes.max())[0]
    assert (preds[1][:, 1:] == -1).all()  # one neighbour, one voted class: the other slots are never hits


def test_fewer_classes_than_top_five_rank_every_class(brute_knn):
    train = clustered_vectors(40, 8, 3, seed=11)
    train_y = np.arange(40) % 3
    val = clustered_vectors(12, 8, 3, seed=12)
    preds = knn_predict(train, train_y, val, 3, (40,), 0.1)
    assert preds[40].shape == (12, min(TOP, 3))
    np.testing.assert_array_equal(preds[40], brute_knn(train, train_y, val, 3, 40, 0.1))
    assert (np.sort(preds[40], axis=1) == [0, 1, 2]).all()  # k = all of train: every class got a vote


def test_neighbours_match_a_float64_full_sort_whatever_the_batch():
    train = clustered_vectors(300, 24, 5, spread=0.2, seed=3)
    train[[50, 51, 200]] = train[10]  # exact ties: lower row first
    q = clustered_vectors(40, 24, 5, spread=0.2, seed=4)
    q[0] = train[10]
    sims = (q.astype(np.float64) @ train.astype(np.float64).T).astype(np.float32)
    for k in (1, 4, 30, 300):
        nb, s = neighbours(q, train, k)
        ref = np.array([sorted(range(300), key=lambda j: (-sims[i, j], j))[:k] for i in range(len(q))])
        np.testing.assert_array_equal(nb, ref, err_msg=f"k={k}")
        np.testing.assert_array_equal(s, np.take_along_axis(sims, ref, 1))
        one_by_one = [neighbours(q[i:i + 1], train, k) for i in range(len(q))]
        np.testing.assert_array_equal(np.vstack([o[0] for o in one_by_one]), nb)
        np.testing.assert_array_equal(np.vstack([o[1] for o in one_by_one]), s)
    assert neighbours(q[:1], train, 4)[0][0].tolist() == [10, 50, 51, 200]


def test_exact_similarity_is_the_float64_dot_rounded():
    rng = np.random.default_rng(5)
    train = rng.normal(size=(50, 7)).astype(np.float32)
    q = rng.normal(size=(9, 7)).astype(np.float32)
    cand = rng.integers(0, 50, (9, 6))
    ref = np.array([[np.dot(train[j].astype(np.float64), q[i].astype(np.float64)) for j in cand[i]]
                    for i in range(9)]).astype(np.float32)
    np.testing.assert_array_equal(exact_similarity(q, train, cand), ref)


def test_vote_sums_exp_similarity_per_class_and_breaks_ties_by_class():
    rng = np.random.default_rng(6)
    sims = rng.uniform(-1, 1, (30, 8)).astype(np.float32)
    labels = rng.integers(0, 6, (30, 8))
    got = vote(sims, labels, 6, 0.07, 5)
    for i in range(30):
        scores = np.zeros(6)
        for s, c in zip(sims[i], labels[i]):
            scores[c] += np.exp(np.float64(s) / 0.07)
        voted = [c for c in sorted(range(6), key=lambda c: (-scores[c], c)) if scores[c] > 0][:5]
        assert got[i].tolist() == voted + [-1] * (5 - len(voted)), i
    # two classes with equal votes: the lower class index first; classes without a vote are -1
    tie = vote(np.array([[0.5, 0.5]], np.float32), np.array([[4, 2]]), 6, 0.1, 5)
    assert tie.tolist() == [[2, 4, -1, -1, -1]]


def test_accuracy_counts_top1_and_any_of_top5():
    pred = np.array([[1, 2, -1], [0, 1, 2], [2, -1, -1], [1, 0, 2]])
    y = np.array([1, 2, 0, 2])
    # top-1 hit: row 0; in the ranked list: rows 0, 1, 3; a -1 slot never matches
    assert accuracy(pred, y) == (0.25, 0.75)
