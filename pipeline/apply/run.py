"""The apply stage: plan → check each file's sha1 → manifest → move (or link) in batches; and its undo."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.apply.config import MOVE, UNDO, ApplyConfig
from pipeline.apply.manifest import (
    ALREADY,
    DONE,
    FAILED,
    IN_PLACE,
    PENDING,
    RESTORED,
    SKIPPED,
    UNDOABLE,
    earlier_moves,
    new_manifest_path,
    read_manifest,
    write_manifest,
)
from pipeline.apply.mover import MoveError, file_sha1, link_file, move_file, restore_file, unlink_copy
from pipeline.apply.plan import Entry, Plan, create_plan
from pipeline.dedup.decisions import CONTAMINATED
from pipeline.io.lock import FileLock
from pipeline.layout import OutputRoot

log = logging.getLogger(__name__)

EXAMPLES = 5  # (from, to) lines a result carries for the summary
CHANGED = "changed since extract (sha1 differs)"
MISSING = "missing: gone since extract"
TAKEN = "a file is already at the destination"


@dataclass(frozen=True)
class ApplyResult:
    """What an apply (or undo) did, or in a dry run would do; the CLI prints it, the API returns it."""

    mode: str  # move, link or undo
    dry_run: bool
    folder: Path | None  # the collection
    target: Path | None  # the quarantine or link folder
    manifest: Path | None  # written (undo: read and updated); None for a dry run or when nothing was to do
    planned: int  # files the plan names (undo: rows of the manifest)
    done: int  # moved, linked or restored now (dry run: that would be)
    bytes: int  # their bytes: freed from the collection when moved
    contaminated: int = 0  # of `done`, rows of contaminated components (decontamination)
    already: int = 0  # moved by an earlier apply (undo: never moved, nothing to restore)
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why): left alone, never acted on
    failed: tuple[tuple[str, str], ...] = ()  # (path, why): an attempt that left the file where it was
    examples: tuple[tuple[str, str], ...] = ()  # a few (from, to)
    undone: str | None = None  # undo: the mode of the manifest (move: files restored; link: links removed)


def run_apply(cfg: ApplyConfig) -> ApplyResult:
    """Act on the decided dedup groups of `cfg.out` (or undo `cfg.undo`); without `cfg.yes` a dry run."""
    if cfg.mode == UNDO:
        return run_undo(cfg)
    plan = create_plan(cfg)
    apply_dir = OutputRoot(plan.root).apply_dir
    earlier = earlier_moves(apply_dir) if cfg.mode == MOVE and apply_dir.is_dir() else {}
    rows = [manifest_row(e) for e in plan.entries]
    for row, entry in zip(rows, plan.entries):
        row["status"], row["detail"] = precheck(entry, earlier)
        row["bytes"] = size_of(entry.source) if row["status"] == PENDING else None
    todo = [i for i, r in enumerate(rows) if r["status"] == PENDING]
    if not cfg.yes:
        for i in tqdm(todo, unit="file", disable=not cfg.progress, desc="apply: checking sha1"):
            why = verify(plan.entries[i])
            if why is not None:
                rows[i]["status"], rows[i]["detail"] = SKIPPED, why
        return result(cfg, plan, rows, None, would=PENDING)
    if not todo:
        return result(cfg, plan, rows, None)
    apply_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(apply_dir / "apply.lock", f"apply on {plan.root}"):
        manifest = new_manifest_path(apply_dir)
        meta = {"mode": cfg.mode, "folder": str(plan.folder), "target": str(plan.target), "root": str(plan.root),
                "groups": str(plan.groups), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        act = move_file if cfg.mode == MOVE else link_file
        done = 0
        with tqdm(total=len(todo), unit="file", disable=not cfg.progress, desc=f"apply: {cfg.mode}") as bar:
            for start in range(0, len(todo), cfg.batch_size):
                write_manifest(manifest, rows, meta)  # before each batch: its rows are pending
                for i in todo[start:start + cfg.batch_size]:
                    rows[i]["status"], rows[i]["detail"] = act_on(plan.entries[i], act)
                    done += rows[i]["status"] == DONE
                    bar.update()
                    if cfg.crash_after is not None and done >= cfg.crash_after:
                        os.kill(os.getpid(), signal.SIGKILL)  # test hook: a kill -9 in the middle
        write_manifest(manifest, rows, meta)
    log.info("apply: manifest %s (undo: dinocurate apply --undo %s)", manifest, manifest)
    return result(cfg, plan, rows, manifest)


def manifest_row(e: Entry) -> dict:
    return {"original": str(e.source), "new": str(e.target), "sha1": e.sha1, "bytes": None, "key": e.key,
            "component": e.component, "reason": e.reason, "keeper": str(e.keeper) if e.keeper else None,
            "status": PENDING, "detail": None}


def precheck(e: Entry, earlier: dict[str, tuple[str, Path]]) -> tuple[str, str | None]:
    """(status, detail) from what is on disk, before any file is read: pending, skipped or already applied."""
    if not os.path.lexists(e.source):
        moved = earlier.get(str(e.source))
        if moved is not None and os.path.lexists(moved[0]):
            return ALREADY, f"moved to {moved[0]} (manifest {moved[1]})"
        return SKIPPED, MISSING
    if e.sha1 is None:
        return SKIPPED, "no sha1 recorded at extract"
    if os.path.lexists(e.target):
        return SKIPPED, TAKEN
    return PENDING, None


def size_of(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def verify(e: Entry) -> str | None:
    """None when the file still has the sha1 recorded at extract, else why it is left alone."""
    try:
        return None if file_sha1(e.source) == e.sha1 else CHANGED
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


def act_on(e: Entry, act: Callable[[Path, Path, bytes], str]) -> tuple[str, str | None]:
    """Check one file, then move or link it: (status, detail). Files that fail a check are never touched."""
    why = verify(e)
    if why is not None:
        return SKIPPED, why
    if os.path.lexists(e.target):
        return SKIPPED, TAKEN
    try:
        return DONE, act(e.source, e.target, e.sha1)
    except MoveError as exc:
        log.warning("apply: %s left in place: %s", e.source, exc.reason)
        return FAILED, exc.reason
    except OSError as exc:
        log.warning("apply: %s left in place: %s", e.source, exc)
        return FAILED, f"{type(exc).__name__}: {exc.strerror or exc}"


def result(cfg: ApplyConfig, plan: Plan, rows: list[dict], manifest: Path | None,
           would: str = DONE) -> ApplyResult:
    acted = [r for r in rows if r["status"] == would]
    return ApplyResult(
        mode=cfg.mode, dry_run=not cfg.yes, folder=plan.folder, target=plan.target, manifest=manifest,
        planned=len(rows), done=len(acted), bytes=sum(r["bytes"] or 0 for r in acted),
        contaminated=sum(r["reason"] == CONTAMINATED for r in acted),
        already=sum(r["status"] == ALREADY for r in rows),
        skipped=tuple((r["original"], r["detail"]) for r in rows if r["status"] == SKIPPED),
        failed=tuple((r["original"], r["detail"]) for r in rows if r["status"] == FAILED),
        examples=tuple((r["original"], r["new"]) for r in acted[:EXAMPLES]))


def run_undo(cfg: ApplyConfig) -> ApplyResult:
    """Put back every file a manifest records as moved (or remove every link it made), whatever point the run
    reached: the files on disk decide, see mover.restore_file. Never overwrites; the manifest is updated."""
    path = Path(cfg.undo).resolve()
    rows, meta = read_manifest(path)
    undo_one = restore_file if meta["mode"] == MOVE else unlink_copy
    todo = [i for i, r in enumerate(rows) if r["status"] in UNDOABLE]
    in_place = 0
    failed, examples, restored = [], [], []
    with FileLock(path.parent / "apply.lock", f"apply on {meta.get('root')}"), \
            tqdm(total=len(todo), unit="file", disable=not cfg.progress, desc="apply: undo") as bar:
        for start in range(0, len(todo), cfg.batch_size):
            for i in todo[start:start + cfg.batch_size]:
                r = rows[i]
                try:
                    how = undo_one(Path(r["original"]), Path(r["new"]), r["sha1"])
                except (MoveError, OSError) as exc:
                    why = exc.reason if isinstance(exc, MoveError) else f"{type(exc).__name__}: {exc}"
                    log.warning("undo: %s not restored: %s", r["original"], why)
                    failed.append((r["original"], why))
                    r["detail"] = why
                    bar.update()
                    continue
                if how in ("in place", "absent"):
                    in_place += r["status"] != RESTORED
                    r["status"] = r["status"] if r["status"] == RESTORED else IN_PLACE
                else:
                    r["status"], r["detail"] = RESTORED, how
                    restored.append(r)
                    if len(examples) < EXAMPLES:
                        examples.append((r["new"], r["original"]))
                bar.update()
            write_manifest(path, rows, meta)
    prune_empty(Path(meta["target"]), [Path(r["new"]) for r in restored])
    return ApplyResult(mode=UNDO, undone=meta["mode"], dry_run=False, folder=Path(meta["folder"]),
                       target=Path(meta["target"]), manifest=path, planned=len(rows), done=len(restored),
                       bytes=sum(r["bytes"] or 0 for r in restored), already=in_place,
                       failed=tuple(failed), examples=tuple(examples))


def prune_empty(target: Path, emptied: list[Path]) -> None:
    """Remove the folders an undo emptied under the quarantine or link folder (the folder itself included), from
    the deepest up; a folder that still holds anything stays."""
    folders = {p for path in emptied for p in path.parents if p == target or target in p.parents}
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty, or already gone
