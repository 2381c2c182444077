"""The output root's layout (pipeline/layout.py): paths, config claim, done markers, stats, later stages' records."""

from __future__ import annotations

import json
import logging
import os

import pyarrow as pa
import pytest

from pipeline.errors import ConfigMismatchError, MissingInputError
from pipeline.io.files import write_json_atomic
from pipeline.io.schema import FAILURE_SCHEMA, feature_schema, feature_table
from pipeline.layout import (
    OutputRoot,
    features_root_of_index,
    graph_parts_done,
    read_graph_record,
    read_index_record,
    read_summary,
    resolve_index_dir,
    write_graph_record,
    write_index_record,
    write_summary,
)
from tests.conftest import PROVENANCE, feature_arrays, listing, meta_rows, write_shards


def small_tables() -> tuple[pa.Table, pa.Table]:
    schema = feature_schema(PROVENANCE, {"cls": 2}, "float16")
    feats = feature_table(schema, meta_rows(2), feature_arrays(2, (("cls", 2),)))
    fails = pa.Table.from_pylist([{"key": "k9", "shard": "s", "index": 9, "stage": "decode",
                                   "reason": "EmptyImage", "detail": "zero-byte"}], schema=FAILURE_SCHEMA)
    return feats, fails


def marker(shard: str, fp: str = "fp-1", digest: str | None = "d1", **extra) -> dict:
    return {"shard": shard, "fingerprint": fp, "digest": digest, "samples": 3, "rows": 2, "failures": 1,
            "failures_by_reason": {"EmptyImage": 1}, **extra}


# --------------------------------------------------------------------------- paths


def test_paths_of_every_stage():
    store = OutputRoot("/o")
    assert repr(store) == "OutputRoot('/o')"
    assert str(store.feature_path("a")) == "/o/features/a.parquet"
    assert str(store.failure_path("a")) == "/o/failures/a.parquet"
    assert str(store.marker_path("a")) == "/o/_done/a.json"
    assert (str(store.config_path), str(store.stats_path)) == ("/o/config.json", "/o/stats.json")
    folders = [store.features, store.failures, store.done, store.index_dir, store.knn_dir, store.dedup_dir,
               store.curate_dir, store.eval_dir, store.report_dir]
    assert [str(f) for f in folders] == ["/o/features", "/o/failures", "/o/_done", "/o/index", "/o/knn",
                                         "/o/dedup", "/o/curate", "/o/eval", "/o/report"]


def test_feature_files_are_sorted_by_shard_id_and_nothing_is_created(tmp_path):
    store = OutputRoot(tmp_path / "new")
    assert store.feature_files() == [] and store.failure_files() == [] and not store.has_features()
    assert not (tmp_path / "new").exists()  # asking does not make folders
    for shard in ("b-2", "a-10", "a-9"):
        store.write_shard(shard, *small_tables(), marker(shard))
    (store.features / "notes.txt").write_text("not a feature file")
    assert [p.name for p in store.feature_files()] == ["a-10.parquet", "a-9.parquet", "b-2.parquet"]
    assert [p.stem for p in store.failure_files()] == ["a-10", "a-9", "b-2"] and store.has_features()


# --------------------------------------------------------------------------- config claim


def test_claim_writes_config_once(tmp_path):
    store = OutputRoot(tmp_path / "out")
    store.claim(PROVENANCE, {"batch_size": 32})
    path = tmp_path / "out" / "config.json"
    first = path.read_bytes()
    assert json.loads(first) == {"provenance": PROVENANCE, "config": {"batch_size": 32}}
    # same fingerprint: accepted, file untouched (even if the run-only config differs)
    store.claim(dict(PROVENANCE, torch="9.9"), {"batch_size": 8})
    OutputRoot(tmp_path / "out").claim(PROVENANCE, {"batch_size": 32})
    assert path.read_bytes() == first
    assert listing(tmp_path / "out") == ["config.json"]


def claimed_with_a_shard(root) -> OutputRoot:
    """A root claimed with PROVENANCE that holds one finished shard: its settings are bound."""
    store = OutputRoot(root)
    store.claim(PROVENANCE, {})
    store.write_shard("s", *small_tables(), marker("s"))
    return store


def test_claim_refuses_another_fingerprint_naming_the_field(tmp_path):
    store = claimed_with_a_shard(tmp_path)
    other = dict(PROVENANCE, fingerprint="fp-2", model="vit_base_patch14_dinov2", torch="2.10.0")
    with pytest.raises(ConfigMismatchError) as info:
        store.claim(other, {})
    msg = str(info.value)
    assert "model" in msg and "vit_small_patch14_reg4_dinov2.lvd142m" in msg and "vit_base_patch14_dinov2" in msg
    assert "torch" not in msg and "resolution" not in msg  # only what differs and matters
    assert json.loads((tmp_path / "config.json").read_text())["provenance"] == PROVENANCE


def test_claim_names_nested_fields(tmp_path):
    store = claimed_with_a_shard(tmp_path)
    other = dict(PROVENANCE, fingerprint="fp-3", preprocess={"mean": [0.5, 0.5, 0.5], "resize": "fixed"})
    with pytest.raises(ConfigMismatchError, match=r"preprocess\.mean"):
        store.claim(other, {})


def test_claim_with_only_the_fingerprint_different(tmp_path):
    store = claimed_with_a_shard(tmp_path)
    with pytest.raises(ConfigMismatchError, match="fingerprint only"):
        store.claim(dict(PROVENANCE, fingerprint="fp-9", timm="1.0.0"), {})


# --------------------------------------------------------------------------- done markers


def test_is_done(tmp_path):
    store = OutputRoot(tmp_path)
    assert store.is_done("s", "fp-1", "d1") is False  # nothing at all
    feats, fails = small_tables()
    store.write_shard("s", feats, fails, marker("s"))
    assert listing(tmp_path) == ["_done", "failures", "features"]
    assert listing(tmp_path / "features") == ["s.parquet"] and listing(tmp_path / "failures") == ["s.parquet"]
    assert store.read_marker("s") == marker("s")
    assert store.is_done("s", "fp-1", "d1") is True
    assert store.is_done("s", "fp-1", "d2") is False  # the chunk's file list changed
    assert store.is_done("s", "fp-1", None) is False
    with pytest.raises(ConfigMismatchError, match="s.json"):
        store.is_done("s", "fp-2", "d1")
    assert store.is_done("other", "fp-1", "d1") is False


def test_is_done_for_tar_shards_without_digest(tmp_path):
    store = OutputRoot(tmp_path)
    store.write_shard("t", *small_tables(), marker("t", digest=None))
    assert store.is_done("t", "fp-1", None) is True


@pytest.mark.parametrize("missing", ["features", "failures"])
def test_is_done_needs_both_files(tmp_path, missing):
    store = OutputRoot(tmp_path)
    store.write_shard("s", *small_tables(), marker("s"))
    os.remove(tmp_path / missing / "s.parquet")
    assert store.is_done("s", "fp-1", "d1") is False


def test_marker_without_files_is_not_done(tmp_path):
    store = OutputRoot(tmp_path)
    write_json_atomic(marker("s"), store.marker_path("s"))
    assert store.is_done("s", "fp-1", "d1") is False


def test_unreadable_marker_is_not_done(tmp_path):
    store = OutputRoot(tmp_path)
    store.write_shard("s", *small_tables(), marker("s"))
    store.marker_path("s").write_text('{"fingerprint": "fp-1", "dig')  # cut off
    assert store.read_marker("s") is None
    assert store.is_done("s", "fp-1", "d1") is False


# --------------------------------------------------------------------------- stats


def test_write_stats_sums_markers(tmp_path):
    store = OutputRoot(tmp_path)
    feats, fails = small_tables()
    store.write_shard("a", feats, fails, marker("a", samples=10, rows=7, failures=3,
                                               failures_by_reason={"EmptyImage": 1, "OSError": 2}))
    store.write_shard("b", feats, fails, marker("b", samples=5, rows=5, failures=0, failures_by_reason={}))
    store.write_shard("c.part", feats, fails, marker("c.part", samples=4, rows=1, failures=3,
                                                     failures_by_reason={"OSError": 1, "NoImage": 2},
                                                     damage="ReadError: unexpected end of data"))
    store.marker_path("broken").write_text("not json")  # ignored, not counted
    run = {"rank": 0, "written": 3}
    stats = store.write_stats(run)
    assert stats["shards_done"] == 3
    assert (stats["samples"], stats["rows"], stats["failures"]) == (19, 13, 6)
    assert stats["failures_by_reason"] == {"EmptyImage": 1, "NoImage": 2, "OSError": 3}
    assert list(stats["failures_by_reason"]) == ["EmptyImage", "NoImage", "OSError"]
    assert stats["damaged_shards"] == {"c.part": "ReadError: unexpected end of data"}
    assert stats["last_run"] == run
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    assert [m["shard"] for m in store.markers()] == ["a", "b", "c.part"]


def test_write_stats_of_an_empty_root(tmp_path):
    stats = OutputRoot(tmp_path / "new").write_stats({})
    assert (stats["shards_done"], stats["samples"], stats["rows"], stats["failures"]) == (0, 0, 0, 0)
    assert stats["failures_by_reason"] == {} and stats["damaged_shards"] == {}
    assert (tmp_path / "new" / "stats.json").exists()


# --------------------------------------------------------------------------- config.json as an input


def test_input_config_of_a_root_without_config_says_run_extract(tmp_path):
    store = OutputRoot(tmp_path)
    assert store.read_config() is None
    with pytest.raises(MissingInputError, match="config.json.*run extract first"):
        store.input_config()


def test_source_shards_are_re_listed_from_the_config(tmp_path):
    shards, _ = write_shards(tmp_path / "shards", 2, 1)
    store = OutputRoot(tmp_path / "out")
    store.claim(PROVENANCE, {"shards": shards, "images": None})
    assert store.input_config()["shards"] == shards
    got = store.source_shards()
    assert sorted(got) == ["train-000000", "train-000001"]
    assert [got[k].url for k in sorted(got)] == shards


def test_unreadable_config_is_treated_as_absent_with_a_warning(tmp_path, caplog):
    (tmp_path / "config.json").write_text('{"provenance": {"fing')  # never written by us: writes are atomic
    with caplog.at_level(logging.WARNING, logger="pipeline.layout"):
        assert OutputRoot(tmp_path).read_config() is None
    assert "config.json" in caplog.text


# --------------------------------------------------------------------------- records of later stages


def test_resolve_index_dir_takes_the_index_folder_or_the_root_holding_it(tmp_path):
    assert resolve_index_dir(tmp_path) == tmp_path  # nothing there: taken as given
    (tmp_path / "index").mkdir()
    assert resolve_index_dir(tmp_path) == tmp_path / "index"
    assert resolve_index_dir(str(tmp_path / "index")) == tmp_path / "index"
    (tmp_path / "index.faiss").write_bytes(b"")  # a folder that is itself an index, with a sub-folder index/
    assert resolve_index_dir(tmp_path) == tmp_path


def test_index_record_round_trip_from_the_folder_or_its_root(tmp_path):
    assert read_index_record(tmp_path) is None and features_root_of_index(tmp_path) is None
    record = {"factory": "Flat", "count": 3, "features": str(tmp_path)}
    write_index_record(OutputRoot(tmp_path).index_dir, record)
    assert listing(tmp_path / "index") == ["index.json"]
    assert read_index_record(tmp_path / "index") == record == read_index_record(tmp_path)
    assert features_root_of_index(tmp_path) == str(tmp_path)
    (tmp_path / "index" / "index.json").write_text("{")  # unreadable: as if absent
    assert read_index_record(tmp_path) is None


def test_graph_record_and_parts_done(tmp_path):
    knn = OutputRoot(tmp_path).knn_dir
    assert read_graph_record(knn) is None and graph_parts_done(knn) == 0
    write_graph_record(knn, {"k": 8, "parts": 3})
    assert read_graph_record(knn) == {"k": 8, "parts": 3} and listing(knn) == ["_graph.json"]  # Parquet readers
    # skip `_` names: pd.read_parquet(knn) reads the parts alone
    (knn / "_graph.json").rename(knn / "graph.json")  # a folder made before: its record is still read
    assert read_graph_record(knn) == {"k": 8, "parts": 3}
    write_graph_record(knn, {"k": 9, "parts": 3})  # and moves to the new name when it is written again
    assert read_graph_record(knn) == {"k": 9, "parts": 3} and listing(knn) == ["_graph.json"]
    for i in range(2):
        write_json_atomic({"rows": 10}, knn / "_done" / f"part-{i:05d}.json")
    write_json_atomic({}, knn / "_done" / "other.json")  # not a part marker
    assert graph_parts_done(knn) == 2


def test_read_summary_is_none_when_absent(tmp_path):
    store = OutputRoot(tmp_path)
    assert read_summary(store.dedup_dir) is None and read_summary(store.curate_dir) is None
    assert not store.dedup_dir.exists()
    write_summary(store.dedup_dir, {"groups": 2, "reasons": {"exact": 1}})
    assert read_summary(store.dedup_dir) == {"groups": 2, "reasons": {"exact": 1}}
    assert json.loads((tmp_path / "dedup" / "summary.json").read_text())["groups"] == 2
    assert read_summary(store.curate_dir) is None
