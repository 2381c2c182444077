"""The apply manifest: one Parquet row per file acted on, rewritten atomically before each batch (FORMAT.md §15)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError, MissingInputError
from pipeline.io.files import write_parquet_atomic

META_KEY = b"dinocurate.apply"
# A row's status: pending = about to be acted on (or the run stopped first: the files tell); done; skipped =
# left alone, never acted on (`detail` says why); failed = an attempt left the file where it was; already
# applied = moved by an earlier manifest; restored / in place = after an undo.
PENDING, DONE, SKIPPED, FAILED, ALREADY, RESTORED, IN_PLACE = (
    "pending", "done", "skipped", "failed", "already applied", "restored", "in place")
UNDOABLE = (PENDING, DONE, FAILED, RESTORED, IN_PLACE)  # rows an undo looks at (the files decide what it does)
SCHEMA = pa.schema([
    ("original", pa.string()), ("new", pa.string()), ("sha1", pa.binary(20)), ("bytes", pa.int64()),
    ("key", pa.string()), ("component", pa.int64()), ("reason", pa.string()), ("keeper", pa.string()),
    ("status", pa.string()), ("detail", pa.string()),
])


def new_manifest_path(folder: Path) -> Path:
    """`manifest-<local time>.parquet` in `folder`, a new name even for two runs in one second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"manifest-{stamp}.parquet", 1
    while path.exists():
        n += 1
        path = folder / f"manifest-{stamp}-{n}.parquet"
    return path


def write_manifest(path: Path, rows: list[dict], meta: dict) -> None:
    """The whole manifest, atomically (a reader sees the previous one or this one, never half)."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
    write_parquet_atomic(table, path)


def read_manifest(path: str | os.PathLike) -> tuple[list[dict], dict]:
    """(rows, the run's record: mode, folder, target, root, groups, created) of a manifest."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"manifest {path} is a folder: give one of its manifest-*.parquet files (written by "
                         f"apply in OUT/apply/)")
    if not path.is_file():
        raise MissingInputError(f"manifest {path} not found: give a manifest-*.parquet written by apply (in "
                                f"OUT/apply/)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path} is not a readable Parquet manifest: {exc}") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None or not set(SCHEMA.names) <= set(table.column_names):
        raise InputError(f"{path} is not an apply manifest (no {META_KEY.decode()} record)")
    return table.select(SCHEMA.names).to_pylist(), json.loads(raw)


def earlier_moves(folder: Path) -> dict[str, tuple[str, Path]]:
    """original path → (where an earlier apply moved it, its manifest), for moves not undone; the newest
    manifest wins."""
    found: dict[str, tuple[str, Path]] = {}
    for path in sorted(folder.glob("manifest-*.parquet"), key=lambda p: p.stat().st_mtime_ns):
        try:
            rows, meta = read_manifest(path)
        except InputError:
            continue
        if meta.get("mode") != "move":
            continue
        for r in rows:
            if r["status"] in (DONE, PENDING):
                found[r["original"]] = (r["new"], path)
            elif r["status"] in (RESTORED, IN_PLACE):
                found.pop(r["original"], None)
    return found
