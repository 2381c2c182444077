"""Samples of a shard, tar, Parquet or folder chunk alike: the one reader used by extract, export and the report."""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.io.decode import SampleError
from pipeline.io.shards import Shard, open_stream, shard_id

log = logging.getLogger(__name__)

# Member extensions taken as the sample's image, in this order of preference.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "pbm", "pnm", "bmp", "tif", "tiff", "gif", "jp2",
              "avif", "heic", "img", "image")
# Damage inside a tar that rereading will not mend: the shard is done, with the damage recorded.
PERMANENT_TAR_ERRORS = (tarfile.TarError, EOFError, ValueError)


@dataclass
class ShardEnd:
    """Sent after the last image of a shard: how many samples it had, which failed, what went wrong."""

    shard: str
    samples: int = 0
    failures: list[dict] = field(default_factory=list)
    damage: str | None = None  # permanent damage (tar cut off, unreadable member): shard still done
    error: str | None = None  # could not be read (missing, network): shard left undone, job fails
    part: int = 0  # this end covers samples with index % parts == part (loader workers sharing one shard)
    parts: int = 1

    @staticmethod
    def merge(ends: list[ShardEnd]) -> ShardEnd:
        """The ends of all parts of one shard as one end: samples summed, failures in index order, the first
        damage and error (the parts of a stream each read it whole, so they see the same damage)."""
        first = ends[0]
        return ShardEnd(first.shard, sum(e.samples for e in ends),
                        sorted((f for e in ends for f in e.failures), key=lambda f: f["index"]),
                        next((e.damage for e in ends if e.damage), None),
                        next((e.error for e in ends if e.error), None))


def failure_row(shard: str, index: int, key: str, err: SampleError) -> dict:
    return {"key": key, "shard": shard, "index": index, "stage": err.stage, "reason": err.reason,
            "detail": err.detail}


def iter_tar(shard: Shard, end: ShardEnd) -> Iterator[dict]:
    """Samples of a tar shard (webdataset grouping); damage goes to `end`, transient errors raise."""

    def record(exn: Exception) -> bool:
        if isinstance(exn, PERMANENT_TAR_ERRORS):
            if end.damage is None:  # the tar reader and the grouping both report one cut: say it once
                detail = str(exn.args[0] if exn.args else exn).split(" @ <", 1)[0]  # drop the stream's repr
                end.damage = f"{type(exn).__name__}: {detail}"[:500]
                log.warning("shard %s is damaged: %s", shard.id, end.damage)
            return True
        raise exn

    stream = open_stream(shard.url)
    try:
        files = tar_file_expander([{"url": shard.url, "stream": stream}], handler=record)
        yield from group_by_keys(files, handler=record)
    finally:
        stream.close()


PARQUET_BATCH_ROWS = 256


def iter_parquet(shard: Shard, end: ShardEnd, extra: tuple[str, ...] = ()) -> Iterator[dict]:
    """Rows of a Parquet unit as samples `{"__key__", "image"}` (+ the `extra` columns the file has), in file
    order. A row whose image is null, a path without bytes, or whose key is null carries the error (a failure
    row); damage to the file goes to `end` (the rows before it are kept), as for a tar."""
    import pyarrow.parquet as pq

    columns = [shard.image_column] + ([shard.key_column] if shard.key_column else [])
    stem = shard_id(shard.url)
    row = shard.first_row
    stream = open_stream(shard.url)
    try:
        first, stop = shard.row_groups
        try:
            file = pq.ParquetFile(stream)
            extra = [c for c in extra if c in file.schema_arrow.names and c not in columns]
            batches = file.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=list(range(first, stop)),
                                        columns=columns + extra)
            for batch in batches:
                images = batch.column(shard.image_column).to_pylist()
                keys = batch.column(shard.key_column).to_pylist() if shard.key_column else [None] * len(images)
                others = {c: batch.column(c).to_pylist() for c in extra}
                for i, (image, key) in enumerate(zip(images, keys)):
                    sample = _parquet_sample(image, key, shard, stem, row)
                    sample.update({c: values[i] for c, values in others.items()})
                    yield sample
                    row += 1
        except (OSError, ValueError, EOFError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            end.damage = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("shard %s is damaged: %s", shard.id, end.damage)
    finally:
        stream.close()


def _parquet_sample(image, key, shard: Shard, stem: str, row: int) -> dict:
    if shard.key_column is None:
        key = f"{stem}_{row:07d}"
    sample = {"__key__": "" if key is None else str(key)}
    if key is None:
        sample["__error__"] = SampleError("read", "NoKey", f"row {row}: column {shard.key_column!r} is null")
    elif isinstance(image, dict):  # datasets.Image: {"bytes": ..., "path": ...}
        if image.get("bytes"):
            sample["image"] = image["bytes"]
        elif image.get("path"):
            sample["__error__"] = SampleError("read", "PathWithoutBytes",
                                              f"row {row}: the image is a path ({image['path']!r}) without bytes")
        else:
            sample["__error__"] = SampleError("read", "NoImage", f"row {row}: column {shard.image_column!r} is empty")
    elif image:
        sample["image"] = image
    else:
        sample["__error__"] = SampleError("read", "NoImage", f"row {row}: column {shard.image_column!r} is null")
    return sample


def iter_folder(shard: Shard, part: int = 0, parts: int = 1) -> Iterator[dict]:
    """Files of a folder chunk as samples keyed by their relative path; unreadable files carry the error.
    Only files part, part + parts, ... are read (see iter_part)."""
    for rel in shard.files[part::parts]:
        try:
            data = Path(shard.root, rel).read_bytes()
        except OSError as exc:
            yield {"__key__": rel, "__error__": SampleError("read", type(exc).__name__, str(exc))}
            continue
        yield {"__key__": rel, "image": data}


def pick_image(sample: dict, image_key: str | None) -> bytes:
    if "__error__" in sample:
        raise sample["__error__"]
    names = (image_key,) if image_key else IMAGE_EXTS
    for name in names:
        if name in sample:
            return sample[name]
    members = sorted(k for k in sample if not k.startswith("__"))
    raise SampleError("read", "NoImage", f"no image member ({'/'.join(names[:6])}...) among {members}")


def iter_samples(shard: Shard, end: ShardEnd, columns: tuple[str, ...] = ()) -> Iterator[dict]:
    """Samples of a tar shard, a Parquet unit or a folder chunk, in order; damage goes to `end`. `columns`:
    the Parquet columns to read beside the image and key (a tar sample has all its members anyway)."""
    if shard.url is None:
        return iter_folder(shard)
    return iter_parquet(shard, end, columns) if shard.is_parquet else iter_tar(shard, end)


def iter_part(shard: Shard, end: ShardEnd, columns: tuple[str, ...] = (), part: int = 0,
              parts: int = 1) -> Iterator[tuple[int, dict]]:
    """(index, sample) for the samples of `shard` whose index % parts == part, in order (parts > 1: loader
    workers sharing one shard). A folder chunk reads only its own files; a tar or Parquet unit is a stream,
    read whole, the other parts' samples passed over."""
    if shard.url is None:
        yield from zip(range(part, len(shard.files), parts), iter_folder(shard, part, parts))
        return
    for index, sample in enumerate(iter_samples(shard, end, columns)):
        if index % parts == part:
            yield index, sample


LIFTED_FROM_JSON = ("url", "caption")  # img2dataset's .json member holds these


def kept_values(sample: dict, names: tuple[str, ...]) -> tuple[str | None, ...]:
    """The sample's members / columns named `names` as text (UTF-8, JSON for other values; None when absent);
    `url` and `caption` come from the sample's `json` member when it has no member of that name."""
    parsed = None
    out = []
    for name in names:
        value = sample.get(name)
        if value is None and name in LIFTED_FROM_JSON and sample.get("json") is not None:
            if parsed is None:
                try:
                    parsed = json.loads(sample["json"])
                except (ValueError, TypeError):
                    parsed = {}
                parsed = parsed if isinstance(parsed, dict) else {}
            value = parsed.get(name)
        out.append(as_text(value))
    return tuple(out)


def as_text(value) -> str | None:
    """A member or column value as text: UTF-8 bytes decoded, other values as JSON; None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return json.dumps(value, default=str, ensure_ascii=False)
