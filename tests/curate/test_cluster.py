"""Clustering (pipeline/curate/cluster.py): seeded spherical k-means, hierarchical levels, even budget splits."""

from __future__ import annotations

import numpy as np

from pipeline.curate.cluster import balanced_sample, hierarchical_kmeans, split_evenly
from pipeline.index.kmeans import kmeans
from tests.conftest import clustered_vectors


def test_split_evenly_and_balanced_sample_exact():
    assert split_evenly(10, [1, 100, 100]) == [1, 5, 4] or split_evenly(10, [1, 100, 100]) == [1, 4, 5]
    assert split_evenly(9, [2, 2, 100]) == [2, 2, 5]
    assert sum(split_evenly(1000, [3, 7, 11])) == 21
    labels = [np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2]), np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])]
    picked = balanced_sample(labels, 4, seed=0)
    assert len(picked) == 4 and len(set(picked)) == 4
    assert (np.asarray(picked) >= 6).sum() == 2  # top level split 2 / 2


def test_kmeans_is_seeded_and_spherical():
    x = clustered_vectors(500, 16, 5, spread=0.1, seed=3)
    c1, a1 = kmeans(x, 5, seed=0)
    c2, a2 = kmeans(x, 5, seed=0)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(np.linalg.norm(c1, axis=1), 1, atol=1e-5)
    levels = hierarchical_kmeans(x, [10, 3])
    assert len(levels) == 2 and levels[1].max() < 3 and levels[0].max() < 10
