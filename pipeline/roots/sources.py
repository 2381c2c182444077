"""Where images come from: an image folder, the shards of an extract root, or one file (report, keeper).

A folder's key is the path relative to it; shards are the inputs an extract root records (read through
`pipeline.io.samples`); a file is a single-image search query. Only the images a page shows are read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from pipeline.io.decode import SampleError
from pipeline.io.samples import ShardEnd, iter_samples, pick_image
from pipeline.layout import OutputRoot
from pipeline.roots.features import open_features, read_meta

log = logging.getLogger(__name__)

Item = tuple[str, str, int]  # (key, shard, index)


@dataclass(frozen=True)
class ImageSource:
    """Where images come from: an image folder (key = relative path), tar shards of an extract root, or one
    file (a single-image search query)."""

    kind: str  # "folder" | "shards" | "file"
    path: Path  # folder, extract root (shards) or file
    image_key: str | None = None

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.path}"


def open_source(path: str | os.PathLike) -> ImageSource | None:
    """The image source of an extract root (from its config.json), a folder or a file; None when unknown."""
    path = Path(path)
    root = OutputRoot(path)
    if root.config_path.is_file():
        config = (root.read_config() or {}).get("config", {})
        if config.get("shards"):
            return ImageSource("shards", path, config.get("image_key"))
        if config.get("images"):
            return ImageSource("folder", Path(config["images"]).expanduser().absolute())
        return None
    if path.is_dir():
        return ImageSource("folder", path.absolute())
    if path.is_file():
        return ImageSource("file", path.absolute())
    return None


def read_images(source: ImageSource, items: Iterable[Item]) -> dict[Item, bytes | str]:
    """Encoded bytes of each item, or why they could not be read; shards are read only up to the last item
    wanted from them."""
    items = list(dict.fromkeys(items))
    if source.kind == "file":
        try:
            data = source.path.read_bytes()
        except OSError as exc:
            return {it: f"{type(exc).__name__}: {exc}" for it in items}
        return {it: data for it in items}
    if source.kind == "folder":
        return {it: _read_folder_file(source.path, it[0]) for it in items}
    return _read_from_shards(source, items)


def _read_folder_file(root: Path, key: str) -> bytes | str:
    path = Path(root, key)
    try:
        path.resolve().relative_to(root.resolve())  # a key is data: never read outside the folder
    except ValueError:
        return "key points outside the image folder"
    try:
        return path.read_bytes()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _read_from_shards(source: ImageSource, items: list[Item]) -> dict[Item, bytes | str]:
    """Items of an extract root's input shards, each checked against its key (the shard may have changed)."""
    found: dict[Item, bytes | str] = {it: "not found in its shard" for it in items}
    by_shard: dict[str, dict[int, Item]] = {}
    for it in items:
        by_shard.setdefault(it[1], {})[int(it[2])] = it
    try:
        shards = OutputRoot(source.path).source_shards()
    except (OSError, ValueError) as exc:
        return {it: f"shards of {source.path} cannot be listed: {exc}" for it in items}
    for shard_id, want in sorted(by_shard.items()):
        if shard_id not in shards:
            found.update({it: f"shard {shard_id} is not among the inputs" for it in want.values()})
            continue
        last = max(want)
        try:
            with closing(iter_samples(shards[shard_id], ShardEnd(shard_id))) as samples:  # closes the stream
                for index, sample in enumerate(samples):
                    it = want.get(index)
                    if it is not None:
                        found[it] = _pick(sample, it, f"{shard_id}#{index}", source.image_key)
                    if index >= last:
                        break
        except (OSError, ValueError) as exc:
            log.warning("report: shard %s could not be read: %s", shard_id, exc)
            error = f"{type(exc).__name__}: {exc}"
            found.update({it: error for it in want.values() if isinstance(found[it], str)})
    return found


def _pick(sample: dict, item: Item, where: str, image_key: str | None) -> bytes | str:
    if sample.get("__key__") != item[0]:
        return f"{where} holds another key"
    try:
        return pick_image(sample, image_key)
    except SampleError as err:
        return f"{err.reason}: {err.detail}"


def key_locations(root: str | os.PathLike) -> dict[str, Item]:
    """key → (key, shard, index) of an extract root's feature rows (to show images known only by key)."""
    meta = read_meta(open_features(root), ("key", "shard", "index"))
    return {k: (k, s, int(i)) for k, s, i in zip(*(meta.column(c).to_pylist() for c in ("key", "shard", "index")))}
