"""Curate says what a user must know: random weights, a budget larger than the pool, an empty pool; Faiss's
own stderr warnings stay quiet (issue 12, items 6, 13, 15)."""

from __future__ import annotations

import pytest

from pipeline.curate.retrieval import CurateConfig, run_curate
from pipeline.errors import InputError
from pipeline.extract.runner import run_extract
from pipeline.index.build import IndexConfig, build_index
from tests.conftest import clustered_vectors, tiny_config, write_feature_root


def test_random_weights_and_a_budget_above_the_pool_are_said(tmp_path, caplog, capfd):
    prov = {"model": "t", "weights": {"source": "random", "sha256": "random", "seed": 0}, "input_size": [3, 56, 56]}
    write_feature_root(tmp_path, clustered_vectors(200, 16, 4), provenance=prov)
    summary = run_curate(CurateConfig(pool=str(tmp_path), balanced=100_000, progress=False))
    assert summary.record["selected"] == 200
    assert any("random weights" in n for n in summary.record["notes"])
    assert any("--balanced 100000 asks for at least the whole pool (200 images)" in n for n in summary.record["notes"])
    assert sum("curate:" in r.getMessage() for r in caplog.records) == 2
    assert "WARNING clustering" not in capfd.readouterr().err  # Faiss's C++ warning on few points


def test_real_weights_say_nothing_extra(tmp_path):
    write_feature_root(tmp_path, clustered_vectors(200, 16, 4))
    summary = run_curate(CurateConfig(pool=str(tmp_path), balanced=50, progress=False))
    assert summary.record["notes"] == [] and summary.record["selected"] == 50


def test_small_ivf_training_prints_no_faiss_warning(tmp_path, capfd):
    write_feature_root(tmp_path, clustered_vectors(300, 16, 4))
    build_index(IndexConfig(features=str(tmp_path), factory="IVF16,Flat", progress=False))
    assert "WARNING clustering" not in capfd.readouterr().err


def test_an_empty_pool_is_one_clear_error(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"not an image at all")
    run_extract(tiny_config(tmp_path / "pool", images=str(photos)))
    with pytest.raises(InputError, match="holds no features"):
        run_curate(CurateConfig(pool=str(tmp_path / "pool"), balanced=10, progress=False))
