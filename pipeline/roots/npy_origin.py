"""What made a .npy's vectors: export-npy's provenance sidecar, written beside it and read back by every stage.

A .npy holds numbers only. export-npy records the model, weights and feature that made them in
`<stem>.provenance.json` (docs/FORMAT.md §14); a stage opening the .npy reads it back, so the guards that hold on
an extract root (random weights turn the dedup embedding stage off, curate and evaluate warn) hold on the .npy.
Without a sidecar, the `dinocurate_export` metadata of export-npy's `keys.parquet` (given as --keys, or beside the
.npy) says the same for exports made before the sidecar existed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.io.files import read_json, write_json_atomic
from pipeline.layout import npy_keys_beside, npy_provenance_path
from pipeline.roots.external import PARQUET_SUFFIXES

log = logging.getLogger(__name__)

EXPORT_KEY = b"dinocurate_export"  # keys.parquet's schema metadata: what the array holds (JSON)
SIDECAR_FORMAT = "dinocurate.npy_provenance/1"


def source_fingerprint(provenance: dict) -> str | None:
    """The fingerprint of the extract root the vectors came from, through any number of exports."""
    origin = provenance.get("origin") or {}
    return origin.get("fingerprint") or provenance.get("fingerprint")


def sidecar_record(provenance: dict, npy: Path, sha256: str, rows: int, dim: int, dtype: str, feature: str,
                   features: str) -> dict:
    """The sidecar of an exported .npy: what its rows are (feature, dtype, normalisation, count) and what made
    them (model, weights, the input's provenance), tied to the array by its SHA-256."""
    return {"format": SIDECAR_FORMAT, "npy": npy.name, "sha256": sha256, "rows": int(rows), "dim": int(dim),
            "dtype": dtype, "feature": feature, "normalised": True, "features": features,
            "model": provenance.get("model"), "weights": provenance.get("weights"),
            "fingerprint": source_fingerprint(provenance), "provenance": provenance}


def write_sidecar(record: dict, npy: Path) -> Path:
    """Write the sidecar beside `npy`, atomically; returns its path."""
    path = npy_provenance_path(npy)
    write_json_atomic(record, path)
    return path


def read_origin(npy: Path, sha256: str, rows: int, dim: int, keys: Path | None = None) -> dict | None:
    """What made the vectors of `npy` ({from, model, weights, feature, features, fingerprint}, unknown fields
    left out), or None when nothing says: its sidecar when it describes these bytes (same SHA-256), else the
    export metadata of a keys.parquet (`keys`, or the one beside it) that describes an array of this shape."""
    sidecar = npy_provenance_path(npy)
    if sidecar.is_file():
        try:
            record = read_json(sidecar)
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s): the provenance of %s is unknown", sidecar, exc, npy.name)
            record = None
        if record is not None and record.get("sha256") == sha256:
            return _origin(record, sidecar)
        if record is not None:
            log.warning("%s describes another array than %s (its SHA-256 differs): ignored", sidecar, npy.name)
    candidates = [keys] if keys is not None and keys.suffix.lower() in PARQUET_SUFFIXES else []
    candidates.append(npy_keys_beside(npy))
    for path in dict.fromkeys(candidates):
        about = export_metadata(path)
        if about is not None and about.get("rows") == rows and about.get("dim") == dim:
            provenance = about.get("provenance") or {}
            return _origin({**about, "model": provenance.get("model"), "weights": provenance.get("weights"),
                            "fingerprint": source_fingerprint(provenance)}, path)
    return None


def export_metadata(path: Path) -> dict | None:
    """The `dinocurate_export` record of a keys.parquet export-npy wrote, or None (absent, not Parquet, none)."""
    if not path.is_file():
        return None
    try:
        raw = (pq.read_schema(path).metadata or {}).get(EXPORT_KEY)
        return json.loads(raw) if raw else None
    except (OSError, ValueError):  # not Parquet, or metadata that is not JSON: says nothing
        return None


def _origin(record: dict, path: Path) -> dict | None:
    """The fields a stage needs from a sidecar or export record; None when it knows no model nor weights."""
    if record.get("model") is None and record.get("weights") is None:
        return None
    origin = {"from": str(path.resolve()), "model": record.get("model"), "weights": record.get("weights"),
              "feature": record.get("feature"), "features": record.get("features"),
              "fingerprint": record.get("fingerprint")}
    return {k: v for k, v in origin.items() if v is not None}
