"""Feature roots (pipeline/roots/features.py): opening, reading matrices, refusing mixed provenance."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import MixedProvenanceError
from pipeline.index.build import IndexConfig, build_index
from pipeline.roots.features import open_features, read_matrix
from tests.conftest import clustered_vectors, write_feature_root


def test_concat_and_patch_mean_features(tmp_path):
    x = clustered_vectors(100, 8, 5)
    write_feature_root(tmp_path, x)
    fs = open_features(tmp_path)
    concat = read_matrix(fs, "concat")
    assert concat.shape == (100, 16)
    np.testing.assert_allclose(np.linalg.norm(concat, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(read_matrix(fs, "patch_mean"), x[:, ::-1], atol=1e-6)
    record = build_index(IndexConfig(features=str(tmp_path), feature="concat", progress=False))
    assert record["dim"] == 16


def test_mixed_provenance_is_refused(tmp_path):
    write_feature_root(tmp_path / "a", clustered_vectors(60, 8, 3), per_shard=60)
    other = {"model": "other", "weights": {"source": "random", "sha256": "random"}, "input_size": [3, 56, 56],
             "resize_mode": "fixed"}
    write_feature_root(tmp_path / "b", clustered_vectors(60, 8, 3), per_shard=60, provenance=other)
    (tmp_path / "b" / "features" / "part-0000.parquet").rename(tmp_path / "a" / "features" / "zz.parquet")
    with pytest.raises(MixedProvenanceError, match="model=other"):
        open_features(tmp_path / "a")


def test_a_root_without_features_says_run_extract_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="run extract first"):
        open_features(tmp_path)
