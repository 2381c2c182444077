"""Images of the served root for thumbnails, read at random from its recorded sources by (key, shard, index).

Only the root's own inputs are read (config.json's image folder or shards): a folder key that would resolve
outside the folder is refused, a sample whose key is not the one asked for is refused. A local uncompressed tar
is indexed once (member offsets, grouped as webdataset groups them) and then read by seeking; a Parquet unit
is read from the row group holding the row; other shards (compressed, remote, pipes) are read up to the sample.
The shard readers (webdataset, and with it torch) are imported only when a shard source is read.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import threading
from collections import OrderedDict
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.io.decode import DATA_ERRORS, SampleError, thumbnail_jpeg
from pipeline.io.shards import Shard, is_url, open_stream
from pipeline.layout import OutputRoot

log = logging.getLogger(__name__)

_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: members it never groups
Members = list[tuple[str, list[tuple[str, int, int]]]]  # per sample: key, [(extension, offset, size)]


class SourceError(Exception):
    """An image that cannot be shown; the message says why (never a path outside the recorded sources)."""


def tar_members(path: str) -> Members:
    """The samples of a local tar as webdataset groups them, with each member's data offset and size; reads
    only the headers. A damaged tar gives the samples before the damage (as extraction kept them)."""
    from webdataset.tariterators import base_plus_ext  # imports torch: only when a tar is read

    samples: Members = []
    try:
        with tarfile.open(path, "r:") as tf:
            for info in tf:
                name = info.name
                if not info.isreg() or (name.startswith("__") and name.endswith("__") and "/" not in name) \
                        or _META.match(name):
                    continue
                prefix, suffix = base_plus_ext(name)
                if prefix is None:
                    continue
                if not samples or samples[-1][0] != prefix:
                    samples.append((prefix, []))
                suffix = suffix.lower()
                if all(suffix != ext for ext, _, _ in samples[-1][1]):  # webdataset keeps the first of two
                    samples[-1][1].append((suffix, info.offset_data, info.size))
                tf.members = []  # headers are not kept: a shard may hold a million members
    except (tarfile.TarError, EOFError) as exc:
        log.warning("tar %s is damaged after %d samples: %s", path, len(samples), exc)
    return samples


class SourceImages:
    """Encoded images and JPEG thumbnails of an output root's samples, from the inputs its config.json records."""

    def __init__(self, root: str | os.PathLike, thumb_size: int = 256, cached: int = 2048) -> None:
        self.layout = OutputRoot(root)
        config = self.layout.input_config()
        self.folder = Path(config["images"]).resolve() if config.get("images") else None
        self.image_key = config.get("image_key")
        self.max_pixels = int(config.get("max_pixels") or 178_956_970)
        self.thumb_size, self.cached = thumb_size, cached
        self.shards: dict[str, Shard] | None = None
        self.tars: OrderedDict[str, Members] = OrderedDict()
        self.row_groups: dict[str, list[int]] = {}
        self.thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def image(self, key: str, shard: str, index: int) -> bytes:
        """The encoded image of a sample; SourceError when it cannot be read or is not the sample asked for."""
        if self.folder is not None:
            return self._folder_file(key)
        from pipeline.io.samples import pick_image  # webdataset, and with it torch: only for shard sources
        with self.lock:
            if self.shards is None:
                self.shards = self.layout.source_shards()
            source = self.shards.get(shard)
        if source is None:
            raise SourceError(f"shard {shard} is not among the root's inputs")
        try:
            sample = self._sample(source, index)
        except (OSError, ValueError) as exc:
            raise SourceError(f"shard {shard} cannot be read: {type(exc).__name__}") from exc
        if sample is None:
            raise SourceError(f"{shard}#{index} is not in its shard")
        if sample.get("__key__") != key:
            raise SourceError(f"{shard}#{index} holds another key than {key!r} (the shard changed?)")
        try:
            return pick_image(sample, self.image_key)
        except SampleError as err:
            raise SourceError(f"{err.reason}: {err.detail}") from err

    def thumbnail(self, key: str, shard: str, index: int, size: int | None = None) -> bytes:
        """A JPEG of at most `size` (default: the server's) pixels a side; cached, most recent kept."""
        size = size or self.thumb_size
        wanted = (key, shard, index, size)
        with self.lock:
            if wanted in self.thumbs:
                self.thumbs.move_to_end(wanted)
                return self.thumbs[wanted]
        data = jpeg_thumbnail(self.image(key, shard, index), size, self.max_pixels)
        with self.lock:
            self.thumbs[wanted] = data
            while len(self.thumbs) > self.cached:
                self.thumbs.popitem(last=False)
        return data

    def _folder_file(self, key: str) -> bytes:
        path = (self.folder / key).resolve()
        if not path.is_relative_to(self.folder):  # a key is data: never read outside the folder
            raise SourceError("the key points outside the image folder")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SourceError(f"the file cannot be read: {type(exc).__name__}") from exc

    def _sample(self, shard: Shard, index: int) -> dict | None:
        from pipeline.io.samples import ShardEnd, iter_samples

        local = shard.url.removeprefix("file://") if shard.url and not is_url(shard.url) else None
        if local and local.endswith(".tar") and not shard.is_parquet and os.path.isfile(local):
            return self._tar_sample(shard.id, local, index)
        if shard.is_parquet:
            shard, index = self._row_group_of(shard, index)
        end = ShardEnd(shard.id)
        with closing(iter_samples(shard, end)) as samples:
            for i, sample in enumerate(samples):
                if i == index:
                    return sample
        return None

    def _tar_sample(self, shard: str, path: str, index: int) -> dict | None:
        with self.lock:
            members = self.tars.get(shard)
            if members is not None:
                self.tars.move_to_end(shard)
        if members is None:
            members = tar_members(path)
            with self.lock:
                self.tars[shard] = members
                while len(self.tars) > 64:
                    self.tars.popitem(last=False)
        if not 0 <= index < len(members):
            return None
        key, parts = members[index]
        sample = {"__key__": key}
        with open(path, "rb") as f:
            for ext, offset, size in parts:
                f.seek(offset)
                sample[ext] = f.read(size)
        return sample

    def _row_group_of(self, shard: Shard, index: int) -> tuple[Shard, int]:
        """The one-row-group unit of a Parquet unit that holds its row `index`, and the row's place in it."""
        with self.lock:
            sizes = self.row_groups.get(shard.id)
        if sizes is None:
            with closing(open_stream(shard.url)) as stream:
                meta = pq.ParquetFile(stream).metadata
                sizes = [meta.row_group(g).num_rows for g in range(*shard.row_groups)]
            with self.lock:
                self.row_groups[shard.id] = sizes
        first_row = shard.first_row
        for offset, rows in enumerate(sizes):
            if index < rows:
                group = shard.row_groups[0] + offset
                return replace(shard, row_groups=(group, group + 1), first_row=first_row), index
            index -= rows
            first_row += rows
        return shard, index + sum(sizes)  # past the end: the walk finds nothing


def jpeg_thumbnail(data: bytes, size: int, max_pixels: int) -> bytes:
    """A JPEG of at most `size` pixels a side (JPEGs decoded at reduced scale); SourceError when undecodable."""
    try:
        return thumbnail_jpeg(data, size, max_pixels)
    except SampleError as err:
        raise SourceError(f"{err.reason}: {err.detail}") from err
    except DATA_ERRORS as exc:
        raise SourceError(f"{type(exc).__name__}: {exc}") from exc
