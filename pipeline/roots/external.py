"""Features made elsewhere: a .npy of N×D vectors, or Parquet with `key` and list<float> columns, checked and described.

Such inputs have keys and vectors only: no shard, index, size or image hashes. Their provenance is
`{"source": "external", ...}` with the file's SHA-256 (docs/FORMAT.md, "Features made elsewhere");
`pipeline/roots/features.py` opens them behind the same FeatureSet functions as an extract output root.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError, InputError
from pipeline.io.files import hash_file
from pipeline.io.schema import META_FIELDS
from pipeline.io.tables import read_user_table, unreadable
from pipeline.provenance import stamp

log = logging.getLogger(__name__)

NPY_DTYPES = ("float16", "float32")
PARQUET_SUFFIXES = (".parquet", ".pq")
ANY_NAME = "*"  # the column name an .npy records: its one vector per row answers to whatever --feature says
DIGEST_CHUNK = 1 << 22


# ------------------------------------------------------------------------------------------- digests
def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read 4 MiB at a time; remembered per (path, size, mtime) within the process."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hash_file(path, "sha256", DIGEST_CHUNK)
    log.debug("sha256 of %s (%d bytes): %s", path, size, h.hexdigest())
    return h.hexdigest()


def files_sha256(files: list[Path]) -> str:
    """One file: its SHA-256. Several (a Parquet folder): SHA-256 of the lines `<name> <sha256>\\n`, name order."""
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.name} {file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def external_record(fmt: str, path: Path, files: list[Path], columns: dict[str, dict], rows: int,
                    keys: Path | None) -> dict:
    """The provenance of features made elsewhere; the fingerprint counts the content (sha256, columns, rows),
    not where the file lies nor the keys file."""
    return stamp({"source": "external", "format": fmt, "path": str(path.resolve()), "sha256": files_sha256(files),
                  "columns": columns, "rows": rows, "keys": str(keys.resolve()) if keys else None})


# ------------------------------------------------------------------------------------------- .npy
def load_npy(path: Path) -> np.ndarray:
    """The array memory-mapped (nothing read yet): 2-D, float16 or float32, at least one column."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path} is not a readable .npy array ({exc}); features made elsewhere must be a .npy of "
                         f"N×D float16/float32 vectors (np.save)") from exc
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise InputError(f"{path} holds an array of shape {arr.shape}; features must be N×D (one vector per row): "
                         f"reshape it to 2-D before np.save")
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4):
        raise InputError(f"{path} holds {arr.dtype} values; features must be float16 or float32: "
                         f"np.save(path, x.astype(np.float32))")
    return arr


def npy_columns(arr: np.ndarray) -> dict[str, dict]:
    return {ANY_NAME: {"dim": int(arr.shape[1]), "dtype": np.dtype(arr.dtype.newbyteorder("=")).name}}


def read_keys(path: Path, count: int) -> pa.Array:
    """The keys of an .npy's rows: a text file (one key a line) or a Parquet file with a `key` column (as export-npy
    writes it); exactly one key per row."""
    if path.is_dir():
        raise InputError(f"--keys {path} is a folder: give a text file with one key a line")
    if not path.is_file():
        raise InputError(f"--keys {path} does not exist: give a text file with one key a line")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        table = read_user_table(path, "--keys Parquet file", pq.read_table)
        if "key" not in table.column_names:
            raise InputError(f"--keys {path} has no `key` column (has: {table.column_names})")
        keys = table.column("key").cast(pa.string()).combine_chunks()
        if keys.null_count:
            raise InputError(f"--keys {path}: {keys.null_count} rows have no key")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"--keys {path} is not a text file (not UTF-8 at byte {exc.start}): give one key a "
                             f"line") from exc
        lines = [k.removesuffix("\r") for k in text.removesuffix("\n").split("\n")] if text else []
        empty = [i + 1 for i, k in enumerate(lines) if not k]
        if empty:
            raise InputError(f"--keys {path}: line {empty[0]} is empty ({len(empty)} empty lines); one key a line")
        keys = pa.array(lines, pa.string())
    if len(keys) != count:
        raise InputError(f"--keys {path} holds {len(keys)} keys, the features {count} rows: one key a line, "
                         f"in row order")
    return keys


def npy_batches(path: Path, keys: Path | None, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of an .npy in row order: `key` (the keys file's, else the row number as text) and the vectors
    under any other name asked for; only `batch_rows` rows are read at a time."""
    arr = load_npy(path)
    vectors = [c for c in columns if c != "key"]
    absent = [c for c in vectors if c in META_FIELDS]
    if absent:
        raise InputError(f"{path} holds keys and vectors only: no {', '.join(absent)} (features made elsewhere "
                         f"have no image metadata)")
    if len(vectors) > 1:
        raise ConfigError(f"{path} holds one vector per row: --feature concat (cls + patch_mean) needs two vector "
                          f"columns; use --feature cls")
    key_array = read_keys(keys, len(arr)) if keys is not None and "key" in columns else None
    value_type = pa.float16() if arr.dtype.itemsize == 2 else pa.float32()
    dim = arr.shape[1]
    for start in range(0, len(arr), batch_rows):
        stop = min(start + batch_rows, len(arr))
        out = []
        for name in columns:
            if name == "key":
                out.append(key_array.slice(start, stop - start) if key_array is not None
                           else pa.array([str(i) for i in range(start, stop)], pa.string()))
            else:
                flat = np.ascontiguousarray(arr[start:stop], dtype=arr.dtype.newbyteorder("=")).reshape(-1)
                out.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, value_type), dim))
        yield pa.RecordBatch.from_arrays(out, names=columns)


# ------------------------------------------------------------------------------------------- Parquet
def parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or the `*.parquet` / `*.pq` files of a folder in name order (the order that assigns ids)."""
    if path.is_file():
        if path.suffix.lower() not in PARQUET_SUFFIXES:
            raise InputError(f"{path}: features made elsewhere are a .npy, a .parquet file or a folder of them; "
                             f"an extract output root is a folder holding features/")
        return [path]
    return sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES
                   and not p.name.startswith(".")), key=lambda p: p.name)


def is_vector(t: pa.DataType) -> bool:
    return ((pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and pa.types.is_floating(t.value_type))


def parquet_columns(files: list[Path], rows: list[int]) -> dict[str, dict]:
    """{name: {dim, dtype}} of every list<float> column, the same in every file; a list's width is read from the
    first row (every row is checked when read)."""
    schema = pq.read_schema(files[0])
    for path in files:
        other = pq.read_schema(path)
        if "key" not in other.names:
            raise InputError(f"{path} has no `key` column (has: {other.names}); features made elsewhere need one "
                             f"key and list<float> vector columns")
        if other.remove_metadata() != schema.remove_metadata():
            raise InputError(f"{path} and {files[0]} have different columns: {other} vs {schema}")
    columns = {}
    for field in schema:
        if not is_vector(field.type):
            continue
        if pa.types.is_fixed_size_list(field.type):
            dim = field.type.list_size
        else:
            first = next((p for p, n in zip(files, rows) if n), None)
            batch = next(pq.ParquetFile(first).iter_batches(batch_size=1, columns=[field.name])) if first else None
            dim = len(batch.column(0)[0]) if batch is not None and batch.column(0)[0].is_valid else 0
        columns[field.name] = {"dim": int(dim), "dtype": field.type.value_type.to_pandas_dtype().__name__}
    if not columns:
        raise InputError(f"{files[0]} has no list<float> column: features made elsewhere need a `key` column and "
                         f"one vector column per feature (name it with --feature)")
    return columns


def file_rows(files: list[Path]) -> list[int]:
    rows = []
    for path in files:
        try:
            rows.append(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, pa.ArrowInvalid) as exc:  # empty, damaged, or another kind of file named .parquet
            raise unreadable(path, "Parquet file", exc) from exc
    return rows


def is_npy(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".npy"
