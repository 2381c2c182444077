"""Curation: sample-based = brute-force k-NN union, cluster-based caps, balanced flattening, export."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from webdataset import TarWriter

from pipeline.curate.cluster import balanced_sample, hierarchical_kmeans, kmeans, split_evenly
from pipeline.curate.retrieval import CurateConfig, choose_mode, parse_queries, run_curate
from pipeline.curate.export import ExportConfig, run_export, unsafe_name
from pipeline.errors import SelectionError
from pipeline.extract.runner import run_extract
from tests.conftest import clustered_vectors, jpeg_bytes, make_image, tiny_config, write_feature_root, write_shards


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sample_based_equals_brute_force_knn_union(tmp_path):
    pool = clustered_vectors(1500, 32, 30, spread=0.5, seed=1)
    queries = clustered_vectors(40, 32, 30, spread=0.5, seed=2)
    write_feature_root(tmp_path / "pool", pool, per_shard=400)
    write_feature_root(tmp_path / "seeds", queries, keys=[f"q{i}" for i in range(40)])
    summary = run_curate(CurateConfig(pool=str(tmp_path / "pool"), queries=(("seeds", str(tmp_path / "seeds")),),
                                      mode="sample", k=5, min_similarity=0.5, progress=False))
    sel = pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet")
    sims = queries @ pool.T
    top = np.argsort(-sims, axis=1)[:, :5]
    expected = {int(i) for q in range(40) for i in top[q] if sims[q, i] >= 0.5}
    assert set(sel.id) == expected and sel.id.is_unique
    assert (sel.similarity >= 0.5).all() and set(sel["mode"]) == {"sample"}
    best = {i: sims[:, i][[q for q in range(40) if i in top[q]]].max() for i in expected}
    np.testing.assert_allclose(sel.set_index("id").similarity.loc[sorted(expected)],
                               [best[i] for i in sorted(expected)], atol=1e-5)
    assert summary["sources"]["seeds"]["selected"] == len(expected) == summary["selected"]
    assert list(sel.columns) == ["key", "shard", "index", "id", "source", "mode", "query", "cluster", "similarity"]


def test_cluster_based_uses_only_clusters_with_enough_queries_and_respects_caps(tmp_path):
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(6, 32)))
    sizes = [200] * 6
    pool = unit(np.vstack([centres[c] + 0.05 * rng.normal(size=(n, 32)) for c, n in enumerate(sizes)]))
    # queries: 6 in cluster 0, 4 in cluster 1, 3 in cluster 2 (not more than 3: excluded), 1 in cluster 3
    counts = [6, 4, 3, 1, 0, 0]
    queries = unit(np.vstack([centres[c] + 0.1 * rng.normal(size=(n, 32)) for c, n in enumerate(counts) if n]))
    write_feature_root(tmp_path / "pool", pool, per_shard=300)
    write_feature_root(tmp_path / "seeds", queries, keys=[f"q{i}" for i in range(len(queries))])
    cfg = CurateConfig(pool=str(tmp_path / "pool"), queries=(("s", str(tmp_path / "seeds")),), mode="cluster",
                       clusters=6, min_queries=3, per_cluster=120, max_per_source=200, progress=False)
    summary = run_curate(cfg)
    sel = pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet")
    truth = np.repeat(np.arange(6), sizes)
    per_cluster_queries = summary["sources"]["s"]["queries_per_cluster"]
    assert sorted(per_cluster_queries.values()) == [1, 3, 4, 6]  # k-means found the planted clusters
    assert {per_cluster_queries[str(c)] for c in sel.cluster} == {6, 4}  # only clusters with > 3 queries
    assert set(truth[sel.id]) == {0, 1}
    assert len(sel) == 200  # max_per_source, exactly
    per = pd.Series(truth[sel.id]).value_counts()
    assert per[0] == 120 and per[1] == 80  # per_cluster cap on the query-richest cluster, the rest from the next
    assert summary["sources"]["s"]["clusters_used"] == 2 and summary["clusters"] == 6
    again = run_curate(cfg)
    assert list(pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet").id) == list(sel.id)
    assert again["selected"] == 200


def test_auto_mode_and_several_named_seed_sets(tmp_path):
    pool = clustered_vectors(600, 16, 6, spread=0.2, seed=4)
    write_feature_root(tmp_path / "pool", pool, per_shard=300)
    write_feature_root(tmp_path / "a", pool[:8] + 0.001, keys=[f"a{i}" for i in range(8)])
    write_feature_root(tmp_path / "b", pool[4:12] + 0.001, keys=[f"b{i}" for i in range(8)])
    cfg = CurateConfig(pool=str(tmp_path / "pool"), queries=parse_queries([f"a={tmp_path/'a'},b={tmp_path/'b'}"]),
                       k=1, auto_threshold=5, progress=False)
    summary = run_curate(cfg)
    assert summary["sources"]["a"]["mode"] == "sample" and ">= 5" in summary["sources"]["a"]["why"]
    assert summary["sources"]["a"]["selected"] == 8 and summary["sources"]["a"]["unique"] == 4
    assert summary["selected"] == 12
    assert choose_mode(CurateConfig(pool="p", queries=(("x", "y"),)), 10)[0] == "cluster"
    assert parse_queries(["/d/imagenet"]) == (("imagenet", "/d/imagenet"),)
    with pytest.raises(ValueError, match="unique"):
        CurateConfig(pool="p", queries=(("x", "a"), ("x", "b")))


def test_balanced_sampling_flattens_a_long_tail(tmp_path):
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(8, 32)))
    sizes = [1600, 800, 400, 200, 100, 50, 30, 20]
    pool = unit(np.vstack([centres[c] + 0.05 * rng.normal(size=(n, 32)) for c, n in enumerate(sizes)]))
    truth = np.repeat(np.arange(8), sizes)
    write_feature_root(tmp_path / "pool", pool, per_shard=1000)
    summary = run_curate(CurateConfig(pool=str(tmp_path / "pool"), balanced=400, levels=2, progress=False))
    sel = pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet")
    assert len(sel) == 400 and sel.id.is_unique
    counts = np.bincount(truth[sel.id], minlength=8)
    assert counts.max() / counts.min() <= 10  # pool: 1600 / 20 = 80
    assert counts[:4].sum() < 0.85 * 400  # the four big modes hold 94 % of the pool
    assert summary["balanced"]["selected"] == 400


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


def _export_source(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 3, 4)
    out = tmp_path / "out"
    run_extract(tiny_config(out, shards=tuple(shards)))
    return shards, keys, out


def test_export_selection_round_trips_byte_identical(tmp_path):
    shards, keys, out = _export_source(tmp_path)
    chosen = [keys[1], keys[4], keys[5], keys[11]]
    feats = pd.read_parquet(out / "features")
    sel = feats[feats.key.isin(chosen)][["key", "shard", "index"]]
    (out / "curate").mkdir()
    sel.to_parquet(out / "curate" / "selected.parquet")
    manifest = run_export(ExportConfig(selection=str(out / "curate" / "selected.parquet"),
                                       out=str(tmp_path / "exported"), shard_size=3, progress=False))
    assert [s["samples"] for s in manifest["shards"]] == [3, 1] and manifest["samples"] == 4
    got = {}
    for s in manifest["shards"]:
        for sample in wds.WebDataset(str(tmp_path / "exported" / s["name"]), shardshuffle=False):
            got[sample["__key__"]] = sample
    assert sorted(got) == sorted(chosen)
    originals = {}
    for path in shards:
        for sample in wds.WebDataset(path, shardshuffle=False):
            originals[sample["__key__"]] = sample
    for key in chosen:
        assert got[key]["jpg"] == originals[key]["jpg"] and got[key]["cls"] == originals[key]["cls"]
    import hashlib

    for s in manifest["shards"]:
        assert hashlib.sha256((tmp_path / "exported" / s["name"]).read_bytes()).hexdigest() == s["sha256"]
    assert json.loads((tmp_path / "exported" / "manifest.json").read_text())["samples"] == 4


def test_export_dedup_keepers_and_missing_keys(tmp_path):
    shards, keys, out = _export_source(tmp_path)
    feats = pd.read_parquet(out / "features")
    groups = feats[["key", "shard", "index"]].assign(keep=[i % 2 == 0 for i in range(len(feats))])
    (out / "dedup").mkdir()
    groups.to_parquet(out / "dedup" / "groups.parquet")
    manifest = run_export(ExportConfig(selection=str(out / "dedup" / "groups.parquet"),
                                       out=str(tmp_path / "kept"), progress=False))
    assert manifest["samples"] == int(groups.keep.sum())
    bad = pd.concat([feats[["key", "shard", "index"]].head(2),
                     pd.DataFrame({"key": ["ghost1", "ghost2"], "shard": ["train-000000", "nope"], "index": [99, 0]})])
    bad.to_parquet(out / "dedup" / "groups.parquet")
    with pytest.raises(SelectionError, match=r"2 selected samples are not in .*ghost2 \(nope#0\), ghost1"):
        run_export(ExportConfig(selection=str(out / "dedup" / "groups.parquet"), out=str(tmp_path / "x"),
                                progress=False))
    assert not (tmp_path / "x").exists()  # nothing written for a bad selection


def test_malicious_member_names_are_rejected(tmp_path):
    assert unsafe_name("../../etc/passwd") and unsafe_name("/abs/x.jpg") and unsafe_name("a\\b")
    assert unsafe_name("ok/sub/x.jpg") is None
    path = tmp_path / "evil-000000.tar"
    good = jpeg_bytes(make_image(1))
    with tarfile.open(path, "w") as tf:
        for name, data in [("fine.jpg", good), ("sub/../../escape.jpg", good)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    run_extract(tiny_config(out, shards=(str(path),)))
    feats = pd.read_parquet(out / "features")
    assert sorted(feats.key) == ["fine", "sub/../../escape"]
    (out / "curate").mkdir()
    feats[["key", "shard", "index"]].to_parquet(out / "curate" / "selected.parquet")
    manifest = run_export(ExportConfig(selection=str(out / "curate" / "selected.parquet"),
                                       out=str(tmp_path / "exported"), progress=False))
    assert manifest["samples"] == 1
    assert [r["key"] for r in manifest["rejected"]] == ["sub/../../escape"]
    with tarfile.open(tmp_path / "exported" / manifest["shards"][0]["name"]) as tf:
        assert all(".." not in m.name for m in tf.getmembers())
