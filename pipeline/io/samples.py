"""Samples of a shard, tar or folder chunk alike: the one reader used by extract, export and the report."""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.io.decode import SampleError
from pipeline.io.shards import Shard, is_url

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


def failure_row(shard: str, index: int, key: str, err: SampleError) -> dict:
    return {"key": key, "shard": shard, "index": index, "stage": err.stage, "reason": err.reason,
            "detail": err.detail}


def open_stream(url: str):
    """A binary stream for a local path, a `pipe:` command (webdataset) or any fsspec URL."""
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    if is_url(url):
        import fsspec

        return fsspec.open(url, "rb").open()
    return open(url.removeprefix("file://"), "rb")


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


def iter_folder(shard: Shard) -> Iterator[dict]:
    """Files of a folder chunk as samples keyed by their relative path; unreadable files carry the error."""
    for rel in shard.files:
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


def iter_samples(shard: Shard, end: ShardEnd) -> Iterator[dict]:
    """Samples of a tar shard or a folder chunk, in order; tar damage goes to `end`."""
    return iter_tar(shard, end) if shard.url is not None else iter_folder(shard)
