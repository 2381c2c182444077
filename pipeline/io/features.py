"""Reading an extract output root: one provenance, stable ids, streamed L2-normalised feature matrices."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError, InputError, MissingInputError, MixedProvenanceError
from pipeline.io.schema import read_provenance
from pipeline.layout import OutputRoot
from pipeline.provenance import describe, require_same

log = logging.getLogger(__name__)

FEATURE_CHOICES = ("cls", "patch_mean", "concat")
META_COLUMNS = ("key", "shard", "index", "width", "height", "sha1", "phash")


@dataclass(frozen=True)
class FeatureSet:
    """The feature files of one output root, sorted by shard id: id = running row number in this order."""

    root: Path
    files: tuple[Path, ...]
    rows: tuple[int, ...]  # rows per file
    provenance: dict

    @property
    def count(self) -> int:
        return sum(self.rows)

    def columns(self) -> list[str]:
        return pq.read_schema(self.files[0]).names

    def dim(self, feature: str) -> int:
        schema = pq.read_schema(self.files[0])
        if feature == "concat":
            return schema.field("cls").type.list_size + schema.field("patch_mean").type.list_size
        if feature not in schema.names:
            raise InputError(f"{self.root} has no feature column {feature!r} (has: {schema.names})")
        return schema.field(feature).type.list_size


def open_features(root: str | Path) -> FeatureSet:
    """All `features/*.parquet` of an output root; refuses files of mixed provenance, naming them."""
    root = Path(root)
    layout = OutputRoot(root)
    files = layout.feature_files()
    if not files:
        raise MissingInputError(f"no feature files in {layout.features}: run extract first "
                                f"(make extract ... OUT={root})")
    provenance = read_provenance(files[0])
    rows = []
    for path in files:
        prov = read_provenance(path)
        if prov["fingerprint"] != provenance["fingerprint"]:
            raise MixedProvenanceError(
                f"{path.name} was made with {describe(prov)}, {files[0].name} with {describe(provenance)}; "
                f"features of two models or preprocessings cannot share one index")
        rows.append(pq.ParquetFile(path).metadata.num_rows)
    return FeatureSet(root, tuple(files), tuple(rows), provenance)


def check_same_provenance(a: FeatureSet, b: FeatureSet) -> None:
    """Two feature sets are comparable only when made by the same model, weights and preprocessing."""
    require_same(a.provenance, b.provenance, str(a.root), str(b.root), MixedProvenanceError)


def iter_batches(fs: FeatureSet, columns: list[str], batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """Record batches in id order, reading only the named columns."""
    for path in fs.files:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)


def feature_columns(feature: str) -> list[str]:
    if feature not in FEATURE_CHOICES:
        raise ConfigError(f"feature must be one of {FEATURE_CHOICES}, got {feature!r}")
    return ["cls", "patch_mean"] if feature == "concat" else [feature]


def to_matrix(batch: pa.RecordBatch, feature: str) -> np.ndarray:
    """(N, D) float32, L2-normalised rows (concat: each part normalised, then the whole)."""
    if feature == "concat":
        parts = [normalize(_column(batch, name)) for name in ("cls", "patch_mean")]
        return normalize(np.hstack(parts))
    return normalize(_column(batch, feature))


def _column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = batch.column(batch.schema.get_field_index(name))
    width = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def read_matrix(fs: FeatureSet, feature: str, dtype: type = np.float32, batch_rows: int = 65536) -> np.ndarray:
    """Every vector in id order, normalised, as one (N, D) array of `dtype` (float16 halves the memory)."""
    out = np.empty((fs.count, fs.dim(feature)), dtype=dtype)
    start = 0
    for batch in iter_batches(fs, feature_columns(feature), batch_rows):
        out[start:start + batch.num_rows] = to_matrix(batch, feature)
        start += batch.num_rows
    return out


def read_meta(fs: FeatureSet, columns: tuple[str, ...] = META_COLUMNS) -> pa.Table:
    """Metadata columns of every row, in id order (an `id` column added)."""
    table = pa.concat_tables(pq.read_table(p, columns=list(columns)) for p in fs.files)
    return table.append_column("id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
