"""Moves across file systems (a rename patched to raise EXDEV), interrupted copies, and a kill -9 mid-apply."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.apply import mover
from pipeline.apply.config import ApplyConfig
from pipeline.apply.manifest import read_manifest
from pipeline.apply.run import run_apply
from pipeline.layout import OutputRoot
from tests.apply.conftest import DUPLICATES, FILES, content, snapshot

REPO = Path(__file__).resolve().parents[2]


def cross_device(monkeypatch):
    """Every rename fails as between two file systems (what os.rename raises there)."""
    def rename(src, dst, *a, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(os, "rename", rename)


def test_across_file_systems_the_copy_is_verified_then_the_source_removed(collection, monkeypatch):
    before = snapshot(collection.folder)
    cross_device(monkeypatch)
    r = run_apply(ApplyConfig(out=str(collection.out), yes=True, progress=False))
    assert (r.done, r.failed) == (3, ())
    assert [row["detail"] for row in read_manifest(r.manifest)[0]] == ["copied"] * 3
    for k in DUPLICATES:
        assert not (collection.folder / k).exists()
        assert (collection.quarantine / k).read_bytes() == content(FILES[k])
    u = run_apply(ApplyConfig(undo=str(r.manifest), progress=False))  # back across file systems too
    assert (u.done, u.failed) == (3, ()) and snapshot(collection.folder) == before


def test_a_copy_that_does_not_verify_keeps_the_source(collection, monkeypatch):
    before = snapshot(collection.folder)
    cross_device(monkeypatch)

    def short_copy(fin, fout):  # a copy that lost its last bytes (a full disk, a flaky mount)
        fout.write(fin.read()[:-10])

    monkeypatch.setattr(mover, "copy_bytes", short_copy)
    r = run_apply(ApplyConfig(out=str(collection.out), yes=True, progress=False))
    assert r.done == 0 and len(r.failed) == 3 and all("does not verify" in why for _, why in r.failed)
    assert snapshot(collection.folder) == before  # every source kept, bytes unchanged
    assert not [p for p in collection.quarantine.rglob("*") if p.is_file()]  # no bad copy left behind
    assert {row["status"] for row in read_manifest(r.manifest)[0]} == {"failed"}


def test_undo_after_a_cross_device_move_cut_between_copy_and_unlink(collection):
    """Killed after the copy (complete or partial) and before the source was removed: the source is whole, so
    the undo keeps it and removes the copy; a plain finished move is moved back."""
    before = snapshot(collection.folder)
    r = run_apply(ApplyConfig(out=str(collection.out), yes=True, progress=False))
    complete, partial, _ = DUPLICATES
    shutil.copy2(collection.quarantine / complete, collection.folder / complete)  # copy done, unlink not yet
    shutil.copy2(collection.quarantine / partial, collection.folder / partial)
    with open(collection.quarantine / partial, "r+b") as f:  # copy cut short
        f.truncate(100)
    u = run_apply(ApplyConfig(undo=str(r.manifest), progress=False))
    assert u.failed == () and snapshot(collection.folder) == before
    assert not collection.quarantine.exists()


def test_undo_never_overwrites_a_different_file_at_the_original_path(collection):
    r = run_apply(ApplyConfig(out=str(collection.out), yes=True, progress=False))
    new = collection.folder / DUPLICATES[0]
    new.write_bytes(b"a new file under the old name")
    u = run_apply(ApplyConfig(undo=str(r.manifest), progress=False))
    assert [path for path, _ in u.failed] == [str(new)] and u.done == 2
    assert new.read_bytes() == b"a new file under the old name"
    assert (collection.quarantine / DUPLICATES[0]).read_bytes() == content(FILES[DUPLICATES[0]])


@pytest.mark.parametrize("cross", [False, True])
def test_a_kill_9_in_the_middle_then_undo_restores_everything(collection, cross):
    """The process SIGKILLs itself after 2 of 3 moves (ApplyConfig.crash_after), one file a batch: the manifest
    written before the batch lets the undo put both back and leave the third where it is."""
    before = snapshot(collection.folder)
    patch = ("import errno, os\n"
             "def rename(*a, **k): raise OSError(errno.EXDEV, 'cross-device')\n"
             "os.rename = rename\n") if cross else ""
    code = (patch + "from pipeline.apply.config import ApplyConfig\nfrom pipeline.apply.run import run_apply\n"
            f"run_apply(ApplyConfig(out={str(collection.out)!r}, yes=True, progress=False, batch_size=1, "
            f"crash_after=2))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    moved = [k for k in DUPLICATES if not (collection.folder / k).exists()]
    assert moved == list(DUPLICATES[:2])
    (manifest,) = OutputRoot(collection.out).apply_dir.glob("manifest-*.parquet")
    statuses = [row["status"] for row in read_manifest(manifest)[0]]
    assert statuses == ["done", "pending", "pending"]  # the second move happened after the last write
    u = run_apply(ApplyConfig(undo=str(manifest), progress=False))
    assert (u.done, u.already, u.failed) == (2, 1, ())
    assert snapshot(collection.folder) == before


def test_link_keepers_across_file_systems_copies_and_verifies(collection, tmp_path, monkeypatch):
    def link(src, dst, *a, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(os, "link", link)
    before = snapshot(collection.folder)
    r = run_apply(ApplyConfig(out=str(collection.out), link_keepers=str(tmp_path / "kept"), yes=True, progress=False))
    rows = read_manifest(r.manifest)[0]
    assert r.done == 4 and {row["detail"] for row in rows} == {"copied"}
    assert not any(os.path.samefile(tmp_path / "kept" / row["key"], row["original"]) for row in rows)
    assert snapshot(tmp_path / "kept")[0] == {k: v for k, v in before[0].items() if k in {row["key"] for row in rows}}
    assert snapshot(collection.folder) == before
