"""The input an output root and its units are bound to: one OUT holds one input, and says so in one line."""

from __future__ import annotations

import os
from pathlib import Path


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Two paths naming one file or folder (resolved: `..`, trailing slashes and symlinks do not count)."""
    return os.path.realpath(a) == os.path.realpath(b)


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """`path` is `root` or lies below it (both resolved)."""
    path, root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return path == root or root in path.parents


def other_root_input(root: str | os.PathLike, old: dict, new: dict) -> str | None:
    """Why a run's extract config `new` reads another input than the one `old` (config.json's) made the root
    from: one line naming both, or None when it is the same. An image folder binds the whole root; shards bind
    each unit (other_unit_input), so a root may grow by shards."""
    was, now = old.get("images"), new.get("images")
    if not was and not now or was and now and same_path(was, now):
        return None
    was, now = (f"the image folder {x}" if x else "shards" for x in (was, now))
    return (f"{root} holds the features of {was}, not of {now}: one OUT holds one input. "
            f"Use another OUT for {now} (or delete {root} to start over)")


def other_unit_input(root: str | os.PathLike, unit: str, held: dict | None, origin: dict | None) -> str | None:
    """Why a unit of this run (`Shard.origin`) is not the one its marker holds (`held`): one line, or None."""
    if not held or not origin or same_path(held["input"], origin["input"]):
        return None
    return (f"{root} holds {unit} from {held['input']}, not from {origin['input']}: one OUT holds one input's "
            f"units. Use another OUT for {origin['input']} (or delete {root} to start over)")


def member_change(held: set[str], files: tuple[str, ...]) -> str:
    """What changed in a folder unit, in words: files added and removed, else files replaced or touched."""
    if not held or not files:
        return "its file list changed"
    added, removed = len(set(files) - held), len(held - set(files))
    if added or removed:
        return f"{added} files added, {removed} removed"
    return "files were replaced or touched (size or mtime changed)"
