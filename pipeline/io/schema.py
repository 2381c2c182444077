"""Arrow schemas of feature and failure rows, and the provenance record in a feature file's metadata.

The contract for readers with other tools is docs/FORMAT.md."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError

PROVENANCE_KEY = b"dinocurate"
FAILURE_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()),
    ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
])
_META_FIELDS = [
    ("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()), ("width", pa.int32()),
    ("height", pa.int32()), ("sha1", pa.binary(20)), ("phash", pa.uint64()), ("phash_mirror", pa.uint64()),
    ("phash_flip", pa.uint64()), ("phash_rot180", pa.uint64()),
]
META_FIELDS = tuple(name for name, _ in _META_FIELDS)


def feature_schema(provenance: dict, widths: dict[str, int], dtype: str, kept: tuple[str, ...] = (),
                   stats: tuple[str, ...] = ()) -> pa.Schema:
    """Metadata columns, the kept source columns (strings, --keep-columns), the quality signals (float32,
    --extras stats), then one fixed-size list column per feature; provenance in the schema metadata."""
    value = pa.float16() if dtype == "float16" else pa.float32()
    fields = (list(_META_FIELDS) + [(name, pa.string()) for name in kept] + [(name, pa.float32()) for name in stats]
              + [(name, pa.list_(value, width)) for name, width in widths.items()])
    return pa.schema(fields, metadata={PROVENANCE_KEY: json.dumps(provenance, sort_keys=True).encode()})


def read_provenance(path: str | os.PathLike) -> dict:
    """The provenance record stored in a feature file's schema metadata."""
    meta = pq.read_schema(path).metadata or {}
    if PROVENANCE_KEY not in meta:
        raise InputError(f"{path} has no dinocurate provenance: not a feature file of this pipeline")
    return json.loads(meta[PROVENANCE_KEY])


def feature_table(schema: pa.Schema, rows: dict[str, list], features: dict[str, np.ndarray]) -> pa.Table:
    """Build a table from per-row metadata lists and (N, D) feature arrays, already ordered."""
    columns = []
    for field in schema:
        if field.name in features:
            arr = np.ascontiguousarray(features[field.name], dtype=field.type.value_type.to_pandas_dtype())
            flat = pa.array(arr.reshape(-1), type=field.type.value_type)
            columns.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        else:
            columns.append(pa.array(rows[field.name], type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def warm_arrow() -> None:
    """pyarrow's one-time lazy import, done now: its first `pa.array` of a Python list imports pandas (~0.3 s of
    CPU), which a run otherwise paid in its writer thread at the first shard, during a forward pass."""
    pa.array([""], type=pa.string())
