"""What an apply acts on: the decided dedup groups of a folder root, as files of the collection and their sha1."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.apply.config import LINK, ApplyConfig
from pipeline.dedup.decided import decided_groups, duplicates_of_keepers
from pipeline.dedup.decisions import CONTAMINATED
from pipeline.errors import ConfigError, InputError, MissingInputError
from pipeline.layout import OutputRoot
from pipeline.roots.features import open_features, read_meta

DEFAULT_SUFFIX = ".duplicates"  # the default quarantine: <images>.duplicates, beside the collection


@dataclass(frozen=True)
class Entry:
    """One file to act on: where it is, where it goes, what it must still be, and why."""

    key: str
    source: Path  # absolute, inside the collection
    target: Path  # absolute, inside the quarantine or link folder
    sha1: bytes | None  # recorded at extract; None: not recorded (the file is skipped)
    component: int
    reason: str  # the groups row's: exact, phash, embedding, reviewed, contaminated; keep/unique when linked
    keeper: Path | None  # the file kept in its group (None for a contaminated component)


@dataclass(frozen=True)
class Plan:
    mode: str
    root: Path
    groups: Path
    folder: Path  # the collection
    target: Path  # quarantine or link folder
    entries: tuple[Entry, ...]


def removed_rows(rows: list[dict]) -> tuple[list[dict], dict[int, str]]:
    """(rows that leave the collection, component → keeper key): the duplicates of a keeper (as duplicates.csv
    lists them) and the rows of contaminated components (decontamination against an evaluation set)."""
    duplicates, keeper = duplicates_of_keepers(rows)
    contaminated = [r for r in rows if not r["keep"] and r["reason"] == CONTAMINATED]
    return duplicates + contaminated, {c: r["key"] for c, r in keeper.items()}


def collection_of(root: OutputRoot) -> Path:
    """The image folder a root was extracted from (its config.json), or one line saying why there is none."""
    config = root.input_config()
    if not config.get("images"):
        raise InputError(f"{root.root} was extracted from shards, not an image folder: apply moves files of a "
                         f"folder; for shards, write the kept samples as new shards with make export")
    folder = Path(config["images"]).resolve()
    if not folder.is_dir():
        raise MissingInputError(f"the image folder {folder} that {root.root} was extracted from does not exist")
    return folder


def resolve_target(cfg: ApplyConfig, folder: Path) -> Path:
    """The quarantine (or link) folder, absolute; refused inside the collection, or holding it."""
    given = cfg.link_keepers if cfg.mode == LINK else cfg.move_to
    target = Path(given).expanduser().resolve() if given else folder.with_name(folder.name + DEFAULT_SUFFIX)
    flag = "--link-keepers" if cfg.mode == LINK else "--move-to"
    if target == folder or folder in target.parents:
        raise ConfigError(f"{flag} {target} is inside the collection {folder}: choose a folder outside it (a "
                          f"later extract would read the files again)")
    if target in folder.parents:
        raise ConfigError(f"{flag} {target} holds the collection {folder}: choose a folder beside it")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{flag} {target} is a file: give a folder (it is created when absent)")
    return target


def create_plan(cfg: ApplyConfig) -> Plan:
    """The files an apply acts on, in key order: the removed rows (move mode) or the kept ones (link mode)."""
    root = OutputRoot(cfg.out)
    if root.root.exists() and not root.root.is_dir():
        raise InputError(f"{root.root} is a file: give the output root (folder) of make dedup IMAGES=DIR")
    if not root.root.is_dir():
        raise MissingInputError(f"output root {root.root} does not exist")
    groups = root.groups_path
    if not groups.exists():
        raise MissingInputError(f"no dedup result in {root.root} ({groups} is absent): run make dedup "
                                f"FEATURES={root.root} (or make dedup IMAGES=DIR OUT={root.root}) first")
    folder = collection_of(root)
    target = resolve_target(cfg, folder)
    rows = decided_groups(groups)[0].to_pylist()
    removed, keeper = removed_rows(rows)
    chosen = [r for r in rows if r["keep"]] if cfg.mode == LINK else removed
    sha1 = recorded_sha1(root)
    entries = []
    for r in sorted(chosen, key=lambda r: r["key"]):
        kept = keeper.get(r["component"]) if r["reason"] != CONTAMINATED else None
        entries.append(Entry(r["key"], inside(folder, r["key"]), inside(target, r["key"]),
                             sha1.get((r["shard"], r["index"], r["key"])), r["component"], r["reason"],
                             inside(folder, kept) if kept is not None and cfg.mode != LINK else None))
    return Plan(cfg.mode, root.root.resolve(), groups, folder, target, tuple(entries))


def recorded_sha1(root: OutputRoot) -> dict[tuple[str, int, str], bytes]:
    """(shard, index, key) → the sha1 of the file's bytes, as extract read them (FORMAT.md §2)."""
    meta = read_meta(open_features(root.root), ("key", "shard", "index", "sha1"), absent="null")
    return dict(zip(zip(meta.column("shard").to_pylist(), meta.column("index").to_pylist(),
                        meta.column("key").to_pylist()), meta.column("sha1").to_pylist()))


def inside(folder: Path, key: str) -> Path:
    """`folder/key`, refused when the key would leave the folder (`..`, an absolute path)."""
    path = Path(os.path.normpath(folder / key))
    if folder not in path.parents:
        raise InputError(f"key {key!r} is no relative path inside {folder}: the groups file is not of this folder")
    return path
