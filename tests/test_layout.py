"""The output root (pipeline/store.py): schemas, atomic writes, config claim, done markers, stats."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.schema import FAILURE_SCHEMA, PROVENANCE_KEY, feature_schema, feature_table, read_provenance
from pipeline.errors import ConfigMismatchError
from pipeline.layout import OutputRoot
from pipeline.provenance import diff_records
from pipeline.io.files import write_json_atomic, write_parquet_atomic

PROVENANCE = {"fingerprint": "fp-1", "model": "vit_small_patch14_reg4_dinov2.lvd142m", "resolution": 224,
              "preprocess": {"mean": [0.485, 0.456, 0.406], "resize": "fixed"}, "torch": "2.9.1",
              "note": "unicode ✓ é"}
PHASHES = [0, 1, 2**63 - 1, 2**63, 2**63 + 12345, 2**64 - 1]


def meta_fields() -> list[pa.Field]:
    """The metadata columns every feature file has (a schema without features holds exactly those)."""
    return list(feature_schema({}, {}, "float32"))


def rows(n: int = 6) -> dict[str, list]:
    out = {
        "key": [f"k{i:03d}" for i in range(n)],
        "shard": ["train-000001"] * n,
        "index": list(range(n)),
        "width": [64 + i for i in range(n)],
        "height": [48 - i for i in range(n)],
        "sha1": [hashlib.sha1(str(i).encode()).digest() for i in range(n)],
        "phash": PHASHES[:n],
    }
    for field in meta_fields():  # any further metadata column, filled by type
        if field.name not in out:
            if field.type == pa.uint64():
                out[field.name] = PHASHES[::-1][:n]
            elif pa.types.is_integer(field.type):
                out[field.name] = [3 * i for i in range(n)]
            else:
                out[field.name] = [f"{field.name}-{i}" for i in range(n)]
    return out


def features(n: int = 6, widths=(("cls", 8), ("patch_mean", 3))) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {name: rng.normal(0, 3, (n, d)).astype(np.float32) for name, d in widths}


def only(path) -> list[str]:
    return sorted(os.listdir(path))


# --------------------------------------------------------------------------- schema and table round trip


@pytest.mark.parametrize("dtype, arrow, np_dtype", [("float16", pa.float16(), np.float16),
                                                     ("float32", pa.float32(), np.float32)])
def test_feature_table_round_trip(tmp_path, dtype, arrow, np_dtype):
    widths = {"cls": 8, "patch_mean": 3}
    schema = feature_schema(PROVENANCE, widths, dtype)
    meta = [f.name for f in meta_fields()]
    assert meta[:7] == ["key", "shard", "index", "width", "height", "sha1", "phash"]
    assert schema.names == meta + ["cls", "patch_mean"]  # metadata first, then features in the given order
    assert schema.field("cls").type == pa.list_(arrow, 8)
    assert schema.field("patch_mean").type == pa.list_(arrow, 3)
    assert schema.field("sha1").type == pa.binary(20) and schema.field("phash").type == pa.uint64()
    values, feats = rows(), features()
    path = tmp_path / "f.parquet"
    write_parquet_atomic(feature_table(schema, values, feats), path)

    back = pq.read_table(path)
    assert back.schema.equals(schema) and back.schema.metadata == schema.metadata
    assert back.num_rows == 6
    for name in meta:
        assert back.column(name).to_pylist() == values[name], name
    assert back.column("phash").to_pylist() == PHASHES
    for name, width in widths.items():
        values = back.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        assert values.dtype == np_dtype
        assert np.array_equal(values.reshape(6, width), feats[name].astype(np_dtype))
    assert read_provenance(path) == PROVENANCE


def test_feature_table_casts_float64_input(tmp_path):
    schema = feature_schema(PROVENANCE, {"cls": 4}, "float16")
    x = np.random.default_rng(3).normal(0, 1, (6, 4))
    table = feature_table(schema, rows(), {"cls": x})
    got = table.column("cls").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(6, 4)
    assert np.array_equal(got, x.astype(np.float16))


def test_feature_table_with_no_rows(tmp_path):
    schema = feature_schema(PROVENANCE, {"cls": 4}, "float32")
    empty = {k: [] for k in rows()}
    path = tmp_path / "empty.parquet"
    write_parquet_atomic(feature_table(schema, empty, {"cls": np.zeros((0, 4))}), path)
    back = pq.read_table(path)
    assert back.num_rows == 0 and back.schema.equals(schema) and back.schema.metadata == schema.metadata
    assert read_provenance(path) == PROVENANCE


@pytest.mark.parametrize("shape", [(6, 7), (6, 16), (5, 8)])
def test_feature_table_refuses_a_wrong_feature_shape(shape):
    schema = feature_schema(PROVENANCE, {"cls": 8}, "float32")
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        feature_table(schema, rows(), {"cls": np.zeros(shape)})


def test_sha1_must_be_20_bytes():
    schema = feature_schema(PROVENANCE, {"cls": 2}, "float32")
    bad = rows()
    bad["sha1"][2] = b"short"
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        feature_table(schema, bad, features(widths=(("cls", 2),)))


def test_provenance_is_stored_as_sorted_json():
    schema = feature_schema({"b": 1, "a": {"d": 2, "c": 3}}, {"cls": 2}, "float32")
    assert schema.metadata[PROVENANCE_KEY] == b'{"a": {"c": 3, "d": 2}, "b": 1}'


def test_read_provenance_refuses_a_foreign_parquet(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(ValueError, match="provenance"):
        read_provenance(path)
    pq.write_table(pa.table({"a": [1]}).replace_schema_metadata({b"other": b"x"}), path)
    with pytest.raises(ValueError, match="provenance"):
        read_provenance(path)


# --------------------------------------------------------------------------- atomic writes


def test_write_parquet_atomic_leaves_only_the_file(tmp_path):
    path = tmp_path / "deep" / "er" / "f.parquet"  # parents are created
    write_parquet_atomic(pa.table({"a": [1, 2, 3]}), path)
    assert only(path.parent) == ["f.parquet"]
    assert pq.read_table(path).column("a").to_pylist() == [1, 2, 3]
    write_parquet_atomic(pa.table({"a": [4]}), path)  # replaces
    assert only(path.parent) == ["f.parquet"]
    assert pq.read_table(path).column("a").to_pylist() == [4]


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "f.parquet"
    write_parquet_atomic(pa.table({"a": [1, 2, 3]}), path)
    before = path.read_bytes()
    calls = []

    def half_write(table, where, **kwargs):
        calls.append(str(where))
        with open(where, "wb") as f:  # a partial file, then the failure
            f.write(b"PAR1 partial")
        raise exc

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(type(exc)):
        write_parquet_atomic(pa.table({"a": [9]}), path)
    assert len(calls) == 1 and os.path.dirname(calls[0]) == str(tmp_path) and calls[0] != str(path)
    assert path.read_bytes() == before
    assert only(tmp_path) == ["f.parquet"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(table, where, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(OSError, match="no space"):
        write_parquet_atomic(pa.table({"a": [1]}), tmp_path / "f.parquet")
    assert only(tmp_path) == []


def test_write_json_atomic(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic({"b": 1, "a": [1, 2]}, path)
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert only(tmp_path) == ["x.json"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_parquet_atomic(pa.table({"a": [1]}), tmp_path / "f.parquet")
        write_json_atomic({"a": 1}, tmp_path / "m.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f.parquet").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == 0o644


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
    assert only(tmp_path / "out") == ["config.json"]


def test_claim_refuses_another_fingerprint_naming_the_field(tmp_path):
    store = OutputRoot(tmp_path)
    store.claim(PROVENANCE, {})
    other = dict(PROVENANCE, fingerprint="fp-2", model="vit_base_patch14_dinov2", torch="2.10.0")
    with pytest.raises(ConfigMismatchError) as info:
        store.claim(other, {})
    msg = str(info.value)
    assert "model" in msg and "vit_small_patch14_reg4_dinov2.lvd142m" in msg and "vit_base_patch14_dinov2" in msg
    assert "torch" not in msg and "resolution" not in msg  # only what differs and matters
    assert json.loads((tmp_path / "config.json").read_text())["provenance"] == PROVENANCE


def test_claim_names_nested_fields(tmp_path):
    store = OutputRoot(tmp_path)
    store.claim(PROVENANCE, {})
    other = dict(PROVENANCE, fingerprint="fp-3", preprocess={"mean": [0.5, 0.5, 0.5], "resize": "fixed"})
    with pytest.raises(ConfigMismatchError, match=r"preprocess\.mean"):
        store.claim(other, {})


def test_claim_with_only_the_fingerprint_different(tmp_path):
    store = OutputRoot(tmp_path)
    store.claim(PROVENANCE, {})
    with pytest.raises(ConfigMismatchError, match="fingerprint only"):
        store.claim(dict(PROVENANCE, fingerprint="fp-9", timm="1.0.0"), {})


def test_diff_records():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": 5}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "f": 6}
    assert diff_records(old, new) == [
        "b.d: 3 in the existing output, 4 now",
        "e: 5 in the existing output, None now",
        "f: None in the existing output, 6 now",
    ]


# --------------------------------------------------------------------------- done markers


def small_tables() -> tuple[pa.Table, pa.Table]:
    schema = feature_schema(PROVENANCE, {"cls": 2}, "float16")
    feats = feature_table(schema, rows(2), features(2, (("cls", 2),)))
    fails = pa.Table.from_pylist([{"key": "k9", "shard": "s", "index": 9, "stage": "decode",
                                   "reason": "EmptyImage", "detail": "zero-byte"}], schema=FAILURE_SCHEMA)
    return feats, fails


def marker(shard: str, fp: str = "fp-1", digest: str | None = "d1", **extra) -> dict:
    return {"shard": shard, "fingerprint": fp, "digest": digest, "samples": 3, "rows": 2, "failures": 1,
            "failures_by_reason": {"EmptyImage": 1}, **extra}


def test_is_done(tmp_path):
    store = OutputRoot(tmp_path)
    assert store.is_done("s", "fp-1", "d1") is False  # nothing at all
    feats, fails = small_tables()
    store.write_shard("s", feats, fails, marker("s"))
    assert only(tmp_path) == ["_done", "failures", "features"]
    assert only(tmp_path / "features") == ["s.parquet"] and only(tmp_path / "failures") == ["s.parquet"]
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


def test_paths():
    store = OutputRoot("/o")
    assert str(store.feature_path("a")) == "/o/features/a.parquet"
    assert str(store.failure_path("a")) == "/o/failures/a.parquet"
    assert str(store.marker_path("a")) == "/o/_done/a.json"


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
