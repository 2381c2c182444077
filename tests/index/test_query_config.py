"""Queries are extracted as the index was: the config rebuilt from a provenance reproduces its fingerprint."""

from __future__ import annotations

import pytest
import torch

from pipeline.extract.backbone import create_backbone
from pipeline.extract.runner import run_extract
from pipeline.index.search import config_from_provenance, extras_of
from pipeline.roots.features import open_features
from tests.conftest import tiny_config, write_shards


@pytest.mark.parametrize("options", [
    {},
    {"extras": ("gem", "layers", "registers"), "last_layers": 2, "gem_p": 4.0},
    {"extras": ("stats",), "keep_columns": ("txt",)},
    {"extras": ("layers", "stats"), "last_layers": 1, "keep_columns": ("txt",), "dtype": "float32"},
])
def test_the_rebuilt_config_has_the_fingerprint_of_the_features(tmp_path, options):
    shards, _ = write_shards(tmp_path / "shards", 1, 3)
    run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), **options))
    prov = open_features(tmp_path / "out").provenance
    cfg = config_from_provenance(prov, out=str(tmp_path / "q"), images=str(tmp_path))
    assert set(cfg.extras) == set(options.get("extras", ()))
    assert cfg.keep_columns == options.get("keep_columns", ())
    rebuilt = create_backbone(cfg, torch.device("cpu")).provenance()
    assert rebuilt["fingerprint"] == prov["fingerprint"]


def test_extras_of_reads_feature_columns_and_the_stats_record():
    assert extras_of({"features": ["cls", "patch_mean"]}) == ()
    assert extras_of({"features": ["cls", "patch_mean", "registers", "layers"], "stats": {}}) == (
        "registers", "layers", "stats")
