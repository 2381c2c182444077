"""Export (pipeline/curate/export.py): selected samples copied byte for byte into new shards, bad selections refused."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pandas as pd
import pytest
import webdataset as wds

from pipeline.curate.export import ExportConfig, run_export, unsafe_name
from pipeline.errors import SelectionError
from pipeline.extract.runner import run_extract
from tests.conftest import jpeg_bytes, make_image, tiny_config, write_shards


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
    assert [s["samples"] for s in manifest.record["shards"]] == [3, 1] and manifest.record["samples"] == 4
    got = {}
    for s in manifest.record["shards"]:
        for sample in wds.WebDataset(str(tmp_path / "exported" / s["name"]), shardshuffle=False):
            got[sample["__key__"]] = sample
    assert sorted(got) == sorted(chosen)
    originals = {}
    for path in shards:
        for sample in wds.WebDataset(path, shardshuffle=False):
            originals[sample["__key__"]] = sample
    for key in chosen:
        assert got[key]["jpg"] == originals[key]["jpg"] and got[key]["cls"] == originals[key]["cls"]
    for s in manifest.record["shards"]:
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
    assert manifest.record["samples"] == int(groups.keep.sum())
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
    assert manifest.record["samples"] == 1
    assert [r["key"] for r in manifest.record["rejected"]] == ["sub/../../escape"]
    with tarfile.open(tmp_path / "exported" / manifest.record["shards"][0]["name"]) as tf:
        assert all(".." not in m.name for m in tf.getmembers())
