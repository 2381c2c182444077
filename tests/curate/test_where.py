"""curate --where (only matching pool rows may be selected) and export --where (only matching rows exported)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import webdataset as wds

from pipeline.curate.export import ExportConfig, run_export
from pipeline.errors import ConfigError, InputError
from pipeline.extract.runner import run_extract
from tests.conftest import clustered_vectors, tiny_config, write_feature_root, write_shards

N = 400


@pytest.fixture(scope="module")
def pool_and_seeds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curate_where")
    x = clustered_vectors(N, 32, 8, seed=11)
    write_feature_root(tmp / "pool", x, per_shard=100, pixels=np.arange(N) * 5)
    seeds = clustered_vectors(30, 32, 8, seed=12)
    write_feature_root(tmp / "seeds", seeds, keys=[f"seed{i:02d}" for i in range(30)])
    return tmp, x, seeds


def selected(out) -> pd.DataFrame:
    return pd.read_parquet(out / "selected.parquet")


def test_sample_based_takes_the_k_nearest_among_matching_rows(pool_and_seeds):
    from pipeline.curate.retrieval import CurateConfig, run_curate

    tmp, x, seeds = pool_and_seeds
    out = tmp / "sample"
    summary = run_curate(CurateConfig(pool=str(tmp / "pool"), queries=(("s", str(tmp / "seeds")),), mode="sample",
                                      k=4, out=str(out), where="width >= 1000", progress=False))
    allowed = np.arange(N) * 5 >= 1000
    sims = seeds @ x.T
    sims[:, ~allowed] = -np.inf
    want = set(np.argsort(-sims, axis=1, kind="stable")[:, :4].ravel().tolist())
    assert set(selected(out).id) == want and all(allowed[i] for i in want)
    assert summary.record["where"] == {"expression": "width >= 1000", "matching": int(allowed.sum())}


def test_cluster_and_balanced_modes_select_only_matching_rows(pool_and_seeds):
    from pipeline.curate.retrieval import CurateConfig, run_curate

    tmp, _, _ = pool_and_seeds
    where = "index < 33 or index >= 66"  # index = id % 100 here (100 rows per shard)
    allowed = set(i for i in range(N) if not 33 <= i % 100 < 66)
    run_curate(CurateConfig(pool=str(tmp / "pool"), queries=(("s", str(tmp / "seeds")),), mode="cluster",
                            clusters=8, min_queries=0, out=str(tmp / "cluster"), where=where, progress=False))
    got = set(selected(tmp / "cluster").id)
    assert got and got <= allowed
    run_curate(CurateConfig(pool=str(tmp / "pool"), balanced=50, out=str(tmp / "balanced"), where=where,
                            progress=False))
    got = selected(tmp / "balanced").id
    assert len(got) == 50 and set(got) <= allowed


def test_curate_refuses_a_filter_that_matches_nothing(pool_and_seeds):
    from pipeline.curate.retrieval import CurateConfig, run_curate

    tmp, _, _ = pool_and_seeds
    with pytest.raises(InputError, match="no pool image matches"):
        run_curate(CurateConfig(pool=str(tmp / "pool"), balanced=10, out=str(tmp / "none"), where="width < 0",
                                progress=False))
    with pytest.raises(ConfigError, match="cannot parse --where"):
        run_curate(CurateConfig(pool=str(tmp / "pool"), balanced=10, out=str(tmp / "none"),
                                where="open('/etc/passwd')", progress=False))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_where")
    shards, keys = write_shards(tmp / "shards", 2, 5)
    run_extract(tiny_config(tmp / "out", shards=tuple(shards), extras=("stats",)))
    feats = pd.read_parquet(tmp / "out" / "features")
    (tmp / "out" / "curate").mkdir()
    feats[["key", "shard", "index"]].to_parquet(tmp / "out" / "curate" / "selected.parquet")
    return tmp, feats


def test_export_writes_only_the_selected_rows_that_match(extracted):
    tmp, feats = extracted
    cut = float(np.median(feats.sharpness))
    where = f"index != 1 and sharpness >= {cut!r}"
    manifest = run_export(ExportConfig(selection=str(tmp / "out" / "curate" / "selected.parquet"),
                                       out=str(tmp / "exported"), where=where, progress=False))
    want = sorted(feats[(feats["index"] != 1) & (feats.sharpness >= np.float32(cut))].key)
    got = sorted(s["__key__"] for name in manifest.record["shards"]
                 for s in wds.WebDataset(str(tmp / "exported" / name["name"]), shardshuffle=False))
    assert got == want and 0 < len(want) < len(feats)
    assert manifest.record["where"] == {"expression": where, "selected": len(feats), "matching": len(want)}
    assert json.loads((tmp / "exported" / "manifest.json").read_text())["where"]["matching"] == len(want)


def test_export_uids_honours_where(extracted):
    tmp, feats = extracted
    manifest = run_export(ExportConfig(selection=str(tmp / "out" / "curate" / "selected.parquet"),
                                       out=str(tmp / "uids"), format="uids", where="shard in ['train-000001']",
                                       progress=False))
    keys = (tmp / "uids" / "keys.txt").read_text().split()
    assert keys == sorted(feats[feats.shard == "train-000001"].key) and manifest.record["samples"] == 5
    assert manifest.record["where"]["matching"] == 5
