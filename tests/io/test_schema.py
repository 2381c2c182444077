"""Arrow schemas of feature and failure rows, and the provenance record in a feature file's metadata."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.files import write_parquet_atomic
from pipeline.io.schema import PROVENANCE_KEY, feature_schema, feature_table, read_provenance
from tests.conftest import PHASHES, PROVENANCE, feature_arrays, meta_fields, meta_rows


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
    values, feats = meta_rows(), feature_arrays()
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
    table = feature_table(schema, meta_rows(), {"cls": x})
    got = table.column("cls").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(6, 4)
    assert np.array_equal(got, x.astype(np.float16))


def test_feature_table_with_no_rows(tmp_path):
    schema = feature_schema(PROVENANCE, {"cls": 4}, "float32")
    empty = {k: [] for k in meta_rows()}
    path = tmp_path / "empty.parquet"
    write_parquet_atomic(feature_table(schema, empty, {"cls": np.zeros((0, 4))}), path)
    back = pq.read_table(path)
    assert back.num_rows == 0 and back.schema.equals(schema) and back.schema.metadata == schema.metadata
    assert read_provenance(path) == PROVENANCE


@pytest.mark.parametrize("shape", [(6, 7), (6, 16), (5, 8)])
def test_feature_table_refuses_a_wrong_feature_shape(shape):
    schema = feature_schema(PROVENANCE, {"cls": 8}, "float32")
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        feature_table(schema, meta_rows(), {"cls": np.zeros(shape)})


def test_sha1_must_be_20_bytes():
    schema = feature_schema(PROVENANCE, {"cls": 2}, "float32")
    bad = meta_rows()
    bad["sha1"][2] = b"short"
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        feature_table(schema, bad, feature_arrays(widths=(("cls", 2),)))


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
