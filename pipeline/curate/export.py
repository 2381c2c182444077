"""Write a selection (dedup keepers or a curate selection) back out as new webdataset shards."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm
from webdataset import TarWriter

from pipeline.curate.config import ExportConfig
from pipeline.curate.results import ExportResult
from pipeline.dedup.decided import decided_groups
from pipeline.errors import InputError, MissingInputError, SelectionError
from pipeline.extract.pack import sample_key
from pipeline.index.rows import where_mask
from pipeline.io.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from pipeline.io.samples import IMAGE_EXTS, ShardEnd, as_text, iter_samples
from pipeline.io.shards import Shard
from pipeline.io.tables import read_user_table
from pipeline.layout import GROUPS, SELECTED, OutputRoot, read_summary
from pipeline.roots.features import open_features, read_meta

log = logging.getLogger(__name__)


UID_DTYPE = np.dtype("u8,u8")  # DataComp's subset files: a 128-bit uid as two big-endian halves, sorted
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def key_uids(keys: list[str]) -> tuple[np.ndarray, str]:
    """(sorted uids, how they were made). Keys that are all 32 hex digits (img2dataset / DataComp uids) are the
    uids, as DataComp encodes them; other keys are hashed: uid = MD5 of the key's UTF-8 bytes."""
    if keys and all(_HEX32.match(k) for k in keys):
        how = "the keys are 32-hex-digit uids"
        pairs = [(int(k[:16], 16), int(k[16:], 16)) for k in keys]
    else:
        how = "uid = MD5 of the key's UTF-8 bytes (the keys are not 32-hex-digit uids)"
        digests = [hashlib.md5(k.encode()).hexdigest() for k in keys]
        pairs = [(int(d[:16], 16), int(d[16:], 16)) for d in digests]
    return np.sort(np.array(pairs, dtype=UID_DTYPE)), how


def export_uids(cfg: ExportConfig) -> dict:
    """The selection's keys as `uids.npy` (sorted, DataComp's u8,u8 layout) and `keys.txt` (sorted, one a line),
    for tools that take subset files; returns the manifest (also written as manifest.json)."""
    wanted, where = selected_rows(cfg)
    keys = sorted({key for _, _, key in wanted})
    uids, how = key_uids(keys)
    out = Path(cfg.out)
    OutputRoot(out).prepare()
    buf = io.BytesIO()
    np.save(buf, uids)
    write_bytes_atomic(buf.getvalue(), out / "uids.npy")
    write_text_atomic("".join(k + "\n" for k in keys), out / "keys.txt")
    manifest = {"format": "uids", "selection": str(cfg.selection), "samples": len(keys), "uids": how,
                "files": ["uids.npy", "keys.txt"], **({"where": where} if where else {})}
    write_json_atomic(manifest, out / "manifest.json")
    log.info("export: %d keys → %s/uids.npy, keys.txt (%s)", len(keys), out, how)
    return manifest


def unsafe_name(name: str) -> str | None:
    """Why a tar member name is unsafe to write (absolute, `..`, NUL, backslash), or None."""
    if not name or "\x00" in name or "\\" in name:
        return "empty name, NUL or backslash"
    path = PurePosixPath(name)
    if path.is_absolute():
        return "absolute path"
    if any(part == ".." for part in path.parts):
        return "'..' in the path"
    return None


def read_selection(path: str | Path) -> list[tuple[str, int, str]]:
    """(shard, index, key) of every selected sample, in shard/index order."""
    table = read_user_table(path, f"selection (dedup/{GROUPS} or curate/{SELECTED})", pq.read_table)
    if "keep" in table.column_names:  # dedup groups: export the keepers, as reviewed in make serve
        table, _ = decided_groups(path)
        table = table.filter(table.column("keep"))
    rows = sorted(zip(table.column("shard").to_pylist(), table.column("index").to_pylist(),
                      table.column("key").to_pylist()))
    return rows


def selected_rows(cfg: ExportConfig) -> tuple[list[tuple[str, int, str]], dict | None]:
    """The selection's (shard, index, key) rows, only those whose row in the source matches `cfg.where` when
    given, and what the filter did (None without one)."""
    wanted = read_selection(cfg.selection)
    if not cfg.where:
        return wanted, None
    fs = open_features(source_root(cfg))
    meta = read_meta(fs, ("shard", "index", "key")).filter(pa.array(where_mask(fs, cfg.where)))
    matching = set(zip(*(meta.column(c).to_pylist() for c in ("shard", "index", "key"))))
    kept = [row for row in wanted if row in matching]
    log.info("export --where %s: %d of %d selected samples match", cfg.where, len(kept), len(wanted))
    return kept, {"expression": cfg.where, "selected": len(wanted), "matching": len(kept)}


def source_root(cfg: ExportConfig) -> Path:
    """The extract output root a selection refers to: given, or the pool its dedup/curate summary names."""
    if cfg.features:
        return Path(cfg.features)
    sel = Path(cfg.selection).resolve()
    if sel.parent.name in ("dedup", "curate"):
        summary = read_summary(sel.parent) or {}
        return Path(summary["pool_root"]) if "pool_root" in summary else sel.parent.parent
    raise InputError(f"cannot tell which extract output {cfg.selection} belongs to: pass --features")


SELECTION_FILES = (f"dedup/{GROUPS}", f"curate/{SELECTED}")


def check_selection(path: str) -> None:
    """A selection that is not there, or a folder, is named as such (not as a root that cannot be told)."""
    sel = Path(path)
    if sel.is_dir():
        inside = [str(sel / name) for name in SELECTION_FILES if (sel / name).is_file()]
        raise InputError(f"selection {path} is a folder: give a selection file, "
                         + (" or ".join(inside) if inside else f"an output root's {' or '.join(SELECTION_FILES)}"))
    if not sel.exists():
        raise MissingInputError(f"selection {path} does not exist: give an output root's "
                                f"{' or '.join(SELECTION_FILES)}")


def run_export(cfg: ExportConfig) -> ExportResult:
    """Stream the source shards once, copy the selected samples; returns the counts and the manifest as record.
    With format "uids": only the keys, as subset files (`export_uids`)."""
    check_selection(cfg.selection)
    if cfg.format == "uids":
        manifest = export_uids(cfg)
        return ExportResult(Path(cfg.out), cfg.format, manifest["samples"], [], 0, manifest["uids"], manifest)
    root = source_root(cfg)
    wanted, where = selected_rows(cfg)
    known = set(zip(*(read_meta(open_features(root), ("shard", "index", "key")).column(c).to_pylist()
                      for c in ("shard", "index", "key"))))
    missing = [f"{key} ({shard}#{index})" for shard, index, key in wanted if (shard, index, key) not in known]
    if missing:
        raise SelectionError(f"{len(missing)} selected samples are not in {root}: {', '.join(missing[:20])}"
                             + (" ..." if len(missing) > 20 else ""))
    source = OutputRoot(root)
    shards = source.source_shards()
    kept = tuple(source.input_config().get("keep_columns") or ())
    by_shard: dict[str, dict[int, str]] = {}
    for shard, index, key in wanted:
        by_shard.setdefault(shard, {})[index] = key
    out = Path(cfg.out)
    OutputRoot(out).prepare()  # a file in the way, or no write permission: one clear error
    writer = _Writer(out, cfg.prefix, cfg.shard_size)
    not_found: list[str] = []
    rejected: list[dict] = []
    renamed: list[dict] = []
    written_keys: dict[str, int] = {}  # key → how many later samples were renamed away from it
    with tqdm(total=len(wanted), unit="sample", disable=not cfg.progress, desc="export") as bar:
        for shard_id in sorted(by_shard):
            want = by_shard[shard_id]
            shard = shards[shard_id]
            end = ShardEnd(shard_id)
            samples = iter_samples(shard, end, kept)
            seen = set()
            for index, sample in enumerate(samples):
                if index not in want:
                    continue
                seen.add(index)
                if sample.get("__key__") != want[index]:
                    not_found.append(f"{want[index]} ({shard_id}#{index}: found {sample.get('__key__')!r})")
                    bar.update(1)
                    continue
                record = _to_record(sample, shard)
                key = record["__key__"]
                if key in written_keys:  # two source shards with one key: webdataset would merge them
                    written_keys[key] += 1
                    new = f"{key}__{written_keys[key]}"
                    while new in written_keys:
                        written_keys[key] += 1
                        new = f"{key}__{written_keys[key]}"
                    renamed.append({"key": key, "new_key": new, "shard": shard_id, "index": index})
                    record["__key__"] = key = new
                written_keys.setdefault(key, 0)
                bad = [m for m in _member_names(record) if unsafe_name(m)]
                if bad:
                    rejected.append({"key": want[index], "shard": shard_id, "members": bad,
                                     "reason": unsafe_name(bad[0])})
                    log.error("rejected %s: unsafe member name %r", want[index], bad[0])
                    bar.update(1)
                    continue
                writer.write(record)
                bar.update(1)
            missed = [f"{k} ({shard_id}#{i})" for i, k in want.items() if i not in seen]
            not_found += missed
            bar.update(len(missed))
    manifest = writer.close()
    if renamed:
        log.warning("export: %d samples share their key with an earlier one (e.g. %s from %s): renamed to %s..., "
                    "listed under 'renamed' in manifest.json", len(renamed), renamed[0]["key"], renamed[0]["shard"],
                    renamed[0]["new_key"])
    manifest.update({"selection": str(Path(cfg.selection).resolve()), "source": str(root.resolve()),
                     "selected": len(wanted), "rejected": rejected, "not_found": not_found, "renamed": renamed,
                     **({"where": where} if where else {})})
    write_json_atomic(manifest, out / "manifest.json")
    if not_found:
        raise SelectionError(f"{len(not_found)} selected samples are not in their source shards (changed since "
                             f"extraction?): {', '.join(not_found[:20])}")
    return ExportResult(out, cfg.format, manifest["samples"], [s["name"] for s in manifest["shards"]],
                        len(rejected), None, manifest)


def _to_record(sample: dict, shard: Shard) -> dict:
    """A sample as webdataset writes it: every member's original bytes; folder files get key + path.txt."""
    if shard.is_parquet:  # a row: its image under the extension its bytes say, the key tar-safe
        key = sample["__key__"]
        record = {"__key__": sample_key(key + ".x"), image_extension(sample["image"]): sample["image"]}
        if record["__key__"] != key:
            record["key.txt"] = key.encode()
        for name, value in sample.items():  # the kept columns, as members
            if name != "image" and not name.startswith("__") and value is not None:
                data = value if isinstance(value, bytes) else as_text(value).encode()  # bytes stay byte for byte
                record[name if name in ("json", "txt") else f"{name}.txt"] = data
        return record
    if shard.url is not None:
        return {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
    rel = sample["__key__"]
    ext = Path(rel).suffix.lower().lstrip(".")
    return {"__key__": sample_key(rel), ext if ext in IMAGE_EXTS else "img": sample["image"],
            "path.txt": rel.encode()}


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"), (b"II*\x00", "tif"),
          (b"MM\x00*", "tif"))


def image_extension(data: bytes) -> str:
    """The member extension of encoded image bytes, from their first bytes (`img` when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), "img")


def _member_names(record: dict) -> list[str]:
    key = record["__key__"]
    return [key] + [f"{key}.{ext}" for ext in record if ext != "__key__"]


class _Writer:
    """N samples per shard, each shard written to a temporary name and renamed when complete."""

    def __init__(self, out: Path, prefix: str, size: int) -> None:
        self.out, self.prefix, self.size = out, prefix, size
        self.sink: TarWriter | None = None
        self.count = 0
        self.shards: list[dict] = []

    def write(self, record: dict) -> None:
        if self.sink is None or self.count == self.size:
            self._finish()
            name = f"{self.prefix}-{len(self.shards):06d}.tar"
            self.tmp = self.out / (name + ".tmp")
            self.sink, self.count, self.name = TarWriter(str(self.tmp), encoder=False), 0, name
        self.sink.write(record)
        self.count += 1

    def _finish(self) -> None:
        if self.sink is None:
            return
        self.sink.close()
        final = self.out / self.name
        os.replace(self.tmp, final)
        digest = hashlib.sha256(final.read_bytes()).hexdigest()
        self.shards.append({"name": self.name, "samples": self.count, "bytes": final.stat().st_size,
                            "sha256": digest})
        self.sink = None

    def close(self) -> dict:
        self._finish()
        write_text_atomic("".join(s["name"] + "\n" for s in self.shards), self.out / "shards.txt")
        return {"shards": self.shards, "samples": sum(s["samples"] for s in self.shards)}
