"""Opening FEATURES (an extract root, or a .npy / Parquet made elsewhere): stable ids, streamed normalised matrices.

Every stage reads its input through `open_features` and the functions below, whatever the input is: ids are the
running row number (§7 of docs/FORMAT.md for a root; the row for a .npy; name order of the files for Parquet).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError, InputError, MissingInputError, MixedProvenanceError
from pipeline.io.schema import META_FIELDS, feature_schema, read_provenance
from pipeline.layout import OutputRoot, is_external
from pipeline.provenance import describe, describe_origin, require_comparable, same
from pipeline.roots.external import (
    ANY_NAME,
    PARQUET_SUFFIXES,
    external_record,
    file_rows,
    load_npy,
    npy_batches,
    npy_columns,
    parquet_columns,
    parquet_files,
    read_keys,
)
from pipeline.roots.npy_origin import read_origin

log = logging.getLogger(__name__)


def shown_similarity(value: float | np.ndarray) -> float | np.ndarray:
    """A cosine as people read it (printed or stored): at most 1. Unit vectors stored as float16 round, so
    an image and its copy can score 1.00005."""
    return np.minimum(value, np.float32(1.0)) if isinstance(value, np.ndarray) else min(float(value), 1.0)

FEATURE_CHOICES = ("cls", "patch_mean", "concat")  # of an extract root; Parquet made elsewhere: its column names
META_COLUMNS = ("key", "shard", "index", "width", "height", "sha1", "phash")
ROOT, NPY, PARQUET = "root", "npy", "parquet"  # FeatureSet.kind
HASH_COLUMNS = ("sha1", "phash")


@dataclass(frozen=True)
class FeatureSet:
    """The feature files of one input, in id order (id = running row number in this order).

    kind "root": an extract output root's `features/*.parquet`, sorted by shard id; "npy": one .npy (files = it,
    keys = the --keys file or None for row numbers); "parquet": a Parquet file or folder made elsewhere."""

    root: Path  # the root folder, or the external file / folder as given
    files: tuple[Path, ...]
    rows: tuple[int, ...]  # rows per file
    provenance: dict
    kind: str = ROOT
    keys: Path | None = None

    @property
    def count(self) -> int:
        return sum(self.rows)

    @property
    def external(self) -> bool:
        """Features made elsewhere: keys and vectors only (no shard, index, size, hashes, images)."""
        return self.kind != ROOT

    def columns(self) -> list[str]:
        if self.kind == NPY:
            return ["key", ANY_NAME]
        return pq.read_schema(self.files[0]).names

    def dim(self, feature: str) -> int:
        if self.kind == NPY:
            if feature == "concat":
                raise ConfigError(f"{self.root} holds one vector per row: --feature concat (cls + patch_mean) needs "
                                  f"two vector columns; use --feature cls")
            return self.provenance["columns"][ANY_NAME]["dim"]
        if feature == "concat":
            return sum(self.dim(name) for name in feature_columns(feature))
        if self.kind == PARQUET:
            columns = self.provenance["columns"]
            if feature not in columns:
                raise InputError(f"{self.root} has no vector column {feature!r} (has: {sorted(columns)}): "
                                 f"pass --feature NAME")
            return columns[feature]["dim"]
        schema = pq.read_schema(self.files[0])
        if feature not in schema.names:
            raise InputError(f"{self.root} has no feature column {feature!r} (has: {schema.names})")
        return schema.field(feature).type.list_size


def open_features(root: str | Path, keys: str | Path | None = None) -> FeatureSet:
    """FEATURES: an extract output root (`features/*.parquet`; files of mixed provenance are refused, naming them),
    or features made elsewhere: a .npy (keys = row numbers, or `keys`: one a line) or a Parquet file / folder."""
    root = Path(root)
    if is_external(root):
        return open_external(root, Path(keys) if keys else None)
    if keys:
        raise ConfigError(f"--keys names the keys of a .npy; {root} is an extract output root with keys of its own")
    if not root.exists() and root.suffix.lower() in (".npy", *PARQUET_SUFFIXES):
        raise MissingInputError(f"{root} does not exist")
    layout = OutputRoot(root)
    files = layout.feature_files()
    if not files:
        raise MissingInputError(f"no feature files in {layout.features}: run extract first "
                                f"(make extract ... OUT={root})")
    provenance = read_provenance(files[0])
    rows = []
    for path in files:
        prov = read_provenance(path)
        if not same(prov, provenance):
            raise MixedProvenanceError(
                f"{path.name} was made with {describe(prov)}, {files[0].name} with {describe(provenance)}; "
                f"features of two models or preprocessings cannot share one index")
        rows.append(pq.ParquetFile(path).metadata.num_rows)
    return FeatureSet(root, tuple(files), tuple(rows), provenance)


def open_external(path: Path, keys: Path | None = None) -> FeatureSet:
    """A .npy (memory-mapped, float16/float32, N×D) or a Parquet file / folder (`key` + list<float> columns)."""
    if path.suffix.lower() == ".npy":
        arr = load_npy(path)
        if keys is not None:
            read_keys(keys, len(arr))  # the count is checked now, not halfway through a stage
        record = external_record("npy", path, [path], npy_columns(arr), len(arr), keys)
        origin = read_origin(path, record["sha256"], len(arr), arr.shape[1], keys)
        if origin is not None:  # recorded by export-npy: the guards of an extract root hold (not fingerprinted)
            record = {**record, "origin": origin, **{k: origin[k] for k in ("model", "weights") if k in origin}}
        log.info("%s: %d × %d %s vectors made elsewhere (keys: %s; %s)", path, len(arr), arr.shape[1], arr.dtype,
                 keys or "row numbers", describe_origin(record))
        return FeatureSet(path, (path,), (len(arr),), record, NPY, keys)
    if keys is not None:
        raise ConfigError(f"--keys names the keys of a .npy; {path} is Parquet with a `key` column of its own")
    files = parquet_files(path)
    if not files:
        raise MissingInputError(f"{path} holds no features/ folder and no *.parquet: give an extract output root, "
                                f"a .npy or Parquet with `key` and vector columns")
    rows = file_rows(files)
    record = external_record("parquet", path, files, parquet_columns(files, rows), sum(rows), None)
    log.info("%s: %d rows in %d Parquet files made elsewhere, vector columns %s", path, sum(rows), len(files),
             {k: v["dim"] for k, v in record["columns"].items()})
    return FeatureSet(path, tuple(files), tuple(rows), record, PARQUET)


def check_same_provenance(a: FeatureSet, b: FeatureSet) -> None:
    """Two feature sets are comparable only when made by the same model, weights and preprocessing (two sets made
    elsewhere: when their widths agree, which is all that can be checked)."""
    require_comparable(a.provenance, b.provenance, str(a.root), str(b.root), MixedProvenanceError)


def has_hashes(fs: FeatureSet) -> bool:
    """The rows carry SHA-1 and pHash of their images (extract roots do; features made elsewhere do not)."""
    return not fs.external


def file_subset(fs: FeatureSet, indices: list[int]) -> FeatureSet:
    """The same set restricted to some of its files (ids then restart at 0 over them)."""
    return replace(fs, files=tuple(fs.files[i] for i in indices), rows=tuple(fs.rows[i] for i in indices))


def iter_batches(fs: FeatureSet, columns: list[str], batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """Record batches in id order, reading only the named columns (a .npy: `key` and its vectors)."""
    if fs.kind == NPY:
        yield from npy_batches(fs.files[0], fs.keys, columns, batch_rows)
        return
    for path in fs.files:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)


def check_feature(feature: str, *inputs: str | Path) -> None:
    """cls, patch_mean or concat; another name only as a vector column of Parquet made elsewhere among `inputs`."""
    if feature in FEATURE_CHOICES or (feature and isinstance(feature, str) and any(map(is_external, inputs))):
        return
    raise ConfigError(f"feature must be one of {FEATURE_CHOICES} (another name only for a vector column of Parquet "
                      f"made elsewhere), got {feature!r}")


def feature_columns(feature: str) -> list[str]:
    """The vector columns read for a feature: concat = cls and patch_mean; any other name is one column."""
    if not feature or not isinstance(feature, str):
        raise ConfigError(f"feature must be cls, patch_mean, concat or a vector column's name, got {feature!r}")
    return ["cls", "patch_mean"] if feature == "concat" else [feature]


def to_matrix(batch: pa.RecordBatch, feature: str) -> np.ndarray:
    """(N, D) float32, L2-normalised rows (concat: each part normalised, then the whole)."""
    if feature == "concat":
        parts = [normalize(_column(batch, name)) for name in ("cls", "patch_mean")]
        return normalize(np.hstack(parts))
    return normalize(_column(batch, feature))


def _column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A fixed-size or variable list column as (N, D) float32; a missing vector or a row of another width is an
    error naming the column."""
    col = batch.column(batch.schema.get_field_index(name))
    if isinstance(col, pa.ChunkedArray):  # a Table rather than a RecordBatch
        col = col.combine_chunks()
    if col.null_count:
        raise InputError(f"vector column {name!r}: {col.null_count} rows have no vector")
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
    else:
        lengths = np.diff(col.offsets.to_numpy())
        width = int(lengths[0]) if len(lengths) else 0
        if (lengths != width).any():
            raise InputError(f"vector column {name!r} holds vectors of different lengths "
                             f"({sorted(set(lengths.tolist()))[:5]}): every row needs the same width")
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32)


UNIT_TOLERANCE = 1e-6  # a row this close to norm 1 is left as it is


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows over their norms (floor 1e-12). Rows already of norm 1 (within 1e-6, e.g. read back from export-npy)
    are left bit for bit, so normalising twice gives what normalising once gave."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms = np.where(np.abs(norms - 1) <= UNIT_TOLERANCE, 1, norms)
    return x / np.maximum(norms, 1e-12)


def read_matrix(fs: FeatureSet, feature: str, dtype: type = np.float32, batch_rows: int = 65536) -> np.ndarray:
    """Every vector in id order, normalised, as one (N, D) array of `dtype` (float16 halves the memory)."""
    out = np.empty((fs.count, fs.dim(feature)), dtype=dtype)
    start = 0
    for batch in iter_batches(fs, feature_columns(feature), batch_rows):
        out[start:start + batch.num_rows] = to_matrix(batch, feature)
        start += batch.num_rows
    return out


def read_meta(fs: FeatureSet, columns: tuple[str, ...] = META_COLUMNS, absent: str = "raise") -> pa.Table:
    """Metadata columns of every row, in id order (an `id` column added).

    Features made elsewhere have `key` only: `shard` and `index` come back null; the image columns (size, SHA-1,
    pHash) raise an InputError naming the input, or with `absent="null"` come back null (the caller then checks
    `has_hashes` before comparing them)."""
    if not fs.external:
        table = pa.concat_tables(pq.read_table(p, columns=list(columns)) for p in fs.files)
        return table.append_column("id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    missing = [c for c in columns if c not in ("key", "shard", "index")]
    if missing and absent != "null":
        raise InputError(f"{fs.root} holds features made elsewhere (keys and vectors): it has no {', '.join(missing)}; "
                         f"this step needs the images' {'hashes' if set(missing) & set(HASH_COLUMNS) else 'metadata'}"
                         f" (extract the images with make extract instead)")
    types = {f.name: f.type for f in feature_schema({}, {}, "float32") if f.name in META_FIELDS}
    keys = _external_keys(fs) if "key" in columns else None
    arrays = [keys if c == "key" else pa.nulls(fs.count, types.get(c, pa.string())) for c in columns]
    arrays.append(pa.array(np.arange(fs.count, dtype=np.int64)))
    return pa.table(arrays, names=[*columns, "id"])


def _external_keys(fs: FeatureSet) -> pa.Array:
    if fs.kind == NPY:
        return read_keys(fs.keys, fs.count) if fs.keys else pa.array([str(i) for i in range(fs.count)], pa.string())
    chunks = [pq.read_table(p, columns=["key"]).column("key").cast(pa.string()) for p in fs.files]
    keys = pa.chunked_array([c for chunk in chunks for c in chunk.chunks], pa.string()).combine_chunks()
    if keys.null_count:
        raise InputError(f"{fs.root}: {keys.null_count} rows have no key")
    return keys
