"""Write a selection (dedup keepers or a curate selection) back out as new webdataset shards."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
from tqdm import tqdm
from webdataset import TarWriter

from pipeline.errors import InputError, SelectionError
from pipeline.io.features import open_features, read_meta
from pipeline.io.files import write_json_atomic, write_text_atomic
from pipeline.io.pack import sample_key
from pipeline.io.samples import IMAGE_EXTS, ShardEnd, iter_samples
from pipeline.io.shards import Shard
from pipeline.layout import OutputRoot, read_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    selection: str  # dedup/groups.parquet (rows with keep) or curate/selected.parquet (all rows)
    out: str
    features: str | None = None  # the extract output root the selection refers to (default: inferred)
    shard_size: int = 1000
    prefix: str = "export"
    progress: bool = True


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
    table = pq.read_table(path)
    if "keep" in table.column_names:  # dedup groups: export the keepers
        table = table.filter(table.column("keep"))
    rows = sorted(zip(table.column("shard").to_pylist(), table.column("index").to_pylist(),
                      table.column("key").to_pylist()))
    return rows


def source_root(cfg: ExportConfig) -> Path:
    """The extract output root a selection refers to: given, or the pool its dedup/curate summary names."""
    if cfg.features:
        return Path(cfg.features)
    sel = Path(cfg.selection).resolve()
    if sel.parent.name in ("dedup", "curate"):
        summary = read_summary(sel.parent) or {}
        return Path(summary["pool_root"]) if "pool_root" in summary else sel.parent.parent
    raise InputError(f"cannot tell which extract output {cfg.selection} belongs to: pass --features")


def run_export(cfg: ExportConfig) -> dict:
    """Stream the source shards once, copy the selected samples; returns the manifest."""
    root = source_root(cfg)
    wanted = read_selection(cfg.selection)
    known = set(zip(*(read_meta(open_features(root), ("shard", "index", "key")).column(c).to_pylist()
                      for c in ("shard", "index", "key"))))
    missing = [f"{key} ({shard}#{index})" for shard, index, key in wanted if (shard, index, key) not in known]
    if missing:
        raise SelectionError(f"{len(missing)} selected samples are not in {root}: {', '.join(missing[:20])}"
                             + (" ..." if len(missing) > 20 else ""))
    shards = OutputRoot(root).source_shards()
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
            samples = iter_samples(shard, end)
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
                     "selected": len(wanted), "rejected": rejected, "not_found": not_found, "renamed": renamed})
    write_json_atomic(manifest, out / "manifest.json")
    if not_found:
        raise SelectionError(f"{len(not_found)} selected samples are not in their source shards (changed since "
                             f"extraction?): {', '.join(not_found[:20])}")
    return manifest


def _to_record(sample: dict, shard: Shard) -> dict:
    """A sample as webdataset writes it: every member's original bytes; folder files get key + path.txt."""
    if shard.url is not None:
        return {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
    rel = sample["__key__"]
    ext = Path(rel).suffix.lower().lstrip(".")
    return {"__key__": sample_key(rel), ext if ext in IMAGE_EXTS else "img": sample["image"],
            "path.txt": rel.encode()}


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
