"""The one owner of provenance: what made a set of features, its fingerprint, and refusing to mix two.

A provenance record is a JSON dict (model, weights, preprocessing, precision, ...; see docs/FORMAT.md).
Its fingerprint hashes the fields that change the numbers; the rest is recorded but left out. Importable
without torch, so benchmarks and readers use the same rules as the extractor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pipeline.errors import MismatchError

log = logging.getLogger(__name__)

# Recorded, but they do not change the numbers beyond the parity criteria (cosine > 0.999 to fp32, checked by
# `make parity`): left out of the fingerprint and of reported differences. Precision is among them because
# `--precision auto` picks per machine (bf16 on AMX CPUs and bf16 GPUs, fp32 elsewhere): a root resumed on
# another machine, or written by Ray actors on mixed nodes, stays one root. Each file still records it. So is the
# decoder (`--decode`: the loader's on the CPU, or nvJPEG on the GPU), whose pixels agree within the same criteria.
NOT_FINGERPRINTED = ("device", "torch", "timm", "pipeline", "fingerprint", "compile", "precision",
                     "precision_why", "decode")
# Features made elsewhere count by content (sha256, columns, rows): not where the file lies, nor its keys file,
# nor what an export-npy sidecar says made them (`origin`, and the `model` and `weights` copied from it).
EXTERNAL_NOT_FINGERPRINTED = ("path", "keys", "origin", "model", "weights")


def fingerprint(record: dict) -> str:
    """16 hex digits of SHA-256 over the fields that change the numbers; the weights count by content
    (sha256, plus the seed of a random init), so the same bytes from the hub cache or a path are one model."""
    stable = {k: v for k, v in record.items() if k not in NOT_FINGERPRINTED}
    if made_elsewhere(record):
        stable = {k: v for k, v in stable.items() if k not in EXTERNAL_NOT_FINGERPRINTED}
    else:
        stable["weights"] = [record["weights"]["sha256"], record["weights"].get("seed")]
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stamp(record: dict) -> dict:
    """The record with its fingerprint set."""
    return {**record, "fingerprint": fingerprint(record)}


def diff_records(old: dict, new: dict, prefix: str = "", old_name: str = "in the existing output",
                 new_name: str = "now") -> list[str]:
    """Human-readable differences between two records (nested dicts flattened), every field."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_records(a, b, f"{prefix}{key}.", old_name, new_name)
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} {old_name}, {b!r} {new_name}")
    return out


def differences(a: dict, b: dict, a_name: str = "in the existing output", b_name: str = "now") -> list[str]:
    """The differences that matter: fields outside the fingerprint are left out."""
    return [d for d in diff_records(a, b, "", a_name, b_name)
            if d.split(":")[0].split(".")[0] not in NOT_FINGERPRINTED]


def differing_fields(a: dict, b: dict) -> list[str]:
    """Names of the top-level fields that matter and differ."""
    return [k for k in sorted(set(a) | set(b)) if k not in NOT_FINGERPRINTED and a.get(k) != b.get(k)]


def describe(record: dict) -> str:
    """One line: model, weights, input size, resize mode (made elsewhere: the file and its digest)."""
    if made_elsewhere(record):
        where = f"external {record.get('format')} {record.get('path')} sha256={str(record.get('sha256'))[:12]}"
        return f"{where} ({describe_origin(record)})" if record.get("origin") else where
    return (f"model={record.get('model')} weights={describe_weights(record)} input={record.get('input_size')} "
            f"resize={record.get('resize_mode')}")


def describe_weights(record: dict) -> str:
    """`random`, the first 12 digits of the weights' SHA-256, or `unknown` (features made elsewhere)."""
    weights = record.get("weights")
    if not weights:
        return "unknown"
    return "random" if weights.get("source") == "random" else str(weights.get("sha256", "?"))[:12]


def describe_origin(record: dict) -> str:
    """What made features made elsewhere, as their export-npy sidecar says, or that nothing says it."""
    origin = record.get("origin")
    if not origin:
        return "model and weights unknown"
    return f"model={record.get('model')} weights={describe_weights(record)}, per {Path(origin.get('from', '?')).name}"


def same(a: dict, b: dict) -> bool:
    """True when two records (provenances, or records that carry one's fingerprint) have the same fingerprint."""
    return a.get("fingerprint") == b.get("fingerprint")


def carries(record: dict, fingerprint: str | None) -> bool:
    """True when a record (a provenance, a shard marker, a graph record) holds this fingerprint."""
    return fingerprint is not None and record.get("fingerprint") == fingerprint


def require_same(a: dict, b: dict, what_a: str = "the first", what_b: str = "the second",
                 error: type[MismatchError] = MismatchError) -> None:
    """Raise `error` naming both sides and what differs, unless the two records have one fingerprint."""
    if same(a, b):
        return
    diffs = differences(a, b, f"in {what_a}", f"in {what_b}")
    raise error(f"{what_a} ({describe(a)}) and {what_b} ({describe(b)}) were made differently and cannot be "
                f"mixed; differences: {'; '.join(diffs) or 'fingerprint only'}")


def is_random(record: dict) -> bool:
    """Features made with random weights (tests, dry runs): their similarities mean nothing."""
    return (record.get("weights") or {}).get("source") == "random"


def made_elsewhere(record: dict) -> bool:
    """Features made elsewhere (a .npy or Parquet file): only their content is known, not the model."""
    return record.get("source") == "external"


def external_dims(record: dict) -> dict[str, int]:
    """{vector column: width} of features made elsewhere ("*" for a .npy: any --feature name)."""
    return {name: int(c["dim"]) for name, c in (record.get("columns") or {}).items()}


def require_comparable(a: dict, b: dict, what_a: str = "the first", what_b: str = "the second",
                       error: type[MismatchError] = MismatchError) -> None:
    """`require_same`, except that two sets made elsewhere are taken as one model when their widths agree: nothing
    else can be checked about them, so it is logged. Made elsewhere and extracted here never mix."""
    if not (made_elsewhere(a) and made_elsewhere(b)) or same(a, b):
        require_same(a, b, what_a, what_b, error)
        return
    da, db = external_dims(a), external_dims(b)
    if "*" in da or "*" in db:  # a .npy: its one width must be one of the other's
        wild, other = (da, db) if "*" in da else (db, da)
        ok = wild["*"] in other.values()
    else:
        shared = set(da) & set(db)
        ok = bool(shared) and all(da[n] == db[n] for n in shared)
    if not ok:
        raise error(f"{what_a} and {what_b} are features made elsewhere with other widths ({da} vs {db}): "
                    f"they cannot be compared")
    log.warning("%s and %s are both features made elsewhere: only their widths (%s) can be checked, not that one "
                "model made them", what_a, what_b, da)
