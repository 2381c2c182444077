"""The output root: Parquet schemas, atomic writes, per-shard done markers, config fingerprint, stats."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

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


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


class ConfigMismatchError(RuntimeError):
    """An output root already holds features made another way."""


def feature_schema(provenance: dict, widths: dict[str, int], dtype: str) -> pa.Schema:
    """Metadata columns, then one fixed-size list column per feature; provenance in the schema metadata."""
    value = pa.float16() if dtype == "float16" else pa.float32()
    fields = list(_META_FIELDS) + [(name, pa.list_(value, width)) for name, width in widths.items()]
    return pa.schema(fields, metadata={PROVENANCE_KEY: json.dumps(provenance, sort_keys=True).encode()})


def read_provenance(path: str | os.PathLike) -> dict:
    """The provenance record stored in a feature file's schema metadata."""
    meta = pq.read_schema(path).metadata or {}
    if PROVENANCE_KEY not in meta:
        raise ValueError(f"{path} has no dinocurate provenance: not a feature file of this pipeline")
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


def atomic_write(path: str | os.PathLike, write) -> None:
    """`write(tmp_path)` to a temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_json_atomic(obj: object, path: str | os.PathLike) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")

    atomic_write(path, write)


def diff_records(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two provenance records (nested dicts flattened)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_records(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the existing output, {b!r} now")
    return out


class OutputStore:
    """Layout of one output root (DESIGN.md §2): features/, failures/, _done/, config.json, stats.json."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.features = self.root / "features"
        self.failures = self.root / "failures"
        self.done = self.root / "_done"

    def feature_path(self, shard: str) -> Path:
        return self.features / f"{shard}.parquet"

    def failure_path(self, shard: str) -> Path:
        return self.failures / f"{shard}.parquet"

    def marker_path(self, shard: str) -> Path:
        return self.done / f"{shard}.json"

    def claim(self, provenance: dict, config: dict) -> None:
        """Write config.json, or check that the one there was made with the same fingerprint."""
        path = self.root / "config.json"
        if path.exists():
            old = json.loads(path.read_text())
            old_prov = old.get("provenance", {})
            if old_prov.get("fingerprint") != provenance["fingerprint"]:
                ignore = {"device", "torch", "timm", "pipeline", "fingerprint"}
                diffs = [d for d in diff_records(old_prov, provenance) if d.split(":")[0].split(".")[0] not in ignore]
                raise ConfigMismatchError(
                    f"{self.root} already holds features made another way; refusing to mix them. "
                    f"Differences: {'; '.join(diffs) or 'fingerprint only'}. Use a new OUT, or delete {self.root}.")
            return
        write_json_atomic({"provenance": provenance, "config": config}, path)

    def read_marker(self, shard: str) -> dict | None:
        path = self.marker_path(shard)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("unreadable marker %s: the shard will be redone", path)
            return None

    def is_done(self, shard: str, fingerprint: str, digest: str | None) -> bool:
        marker = self.read_marker(shard)
        if marker is None:
            return False
        if marker.get("fingerprint") != fingerprint:
            raise ConfigMismatchError(f"marker {self.marker_path(shard)} was made with another configuration")
        if marker.get("digest") != digest:
            log.info("shard %s: its file list changed since it was done; redoing it", shard)
            return False
        return self.feature_path(shard).exists() and self.failure_path(shard).exists()

    def write_shard(self, shard: str, features: pa.Table, failures: pa.Table, marker: dict) -> None:
        """Data files first (atomically), the marker last: a shard with a marker is complete."""
        write_parquet_atomic(features, self.feature_path(shard))
        write_parquet_atomic(failures, self.failure_path(shard))
        write_json_atomic(marker, self.marker_path(shard))

    def markers(self) -> list[dict]:
        if not self.done.exists():
            return []
        return [m for p in sorted(self.done.glob("*.json")) if (m := self.read_marker(p.stem)) is not None]

    def write_stats(self, run: dict) -> dict:
        """Merge every marker into stats.json (totals, failures by reason, damaged shards) plus this run."""
        markers = self.markers()
        reasons: dict[str, int] = {}
        for m in markers:
            for reason, n in m.get("failures_by_reason", {}).items():
                reasons[reason] = reasons.get(reason, 0) + n
        stats = {
            "shards_done": len(markers),
            "samples": sum(m["samples"] for m in markers),
            "rows": sum(m["rows"] for m in markers),
            "failures": sum(m["failures"] for m in markers),
            "failures_by_reason": dict(sorted(reasons.items())),
            "damaged_shards": {m["shard"]: m["damage"] for m in markers if m.get("damage")},
            "last_run": run,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json_atomic(stats, self.root / "stats.json")
        return stats
