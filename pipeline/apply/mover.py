"""Moving, linking and restoring one file safely: never over an existing file, never deleting an unverified copy.

Within a file system a move is one `os.rename` (atomic: the file is at one place or the other). Across file
systems (`EXDEV`) it is copy → fsync → sha1 of the copy checked against the one recorded at extract → unlink
the source; a process killed in between leaves the source whole and at worst a partial copy, which
`restore_file` removes. Every function raises `MoveError` (with a one-line reason) when it leaves things as
they were, and lets other `OSError`s through for the caller to record.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from pipeline.io.files import hash_file

CHUNK = 1 << 20
# What os.link answers where a hard link cannot be made: another file system, one without links, too many links
NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


class MoveError(Exception):
    """A file was left where it was; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def file_sha1(path: str | os.PathLike) -> bytes:
    """SHA-1 of a file's bytes: what extract records per image (`sha1` column, the digest of the file read)."""
    return hash_file(path, "sha1", CHUNK).digest()


def copy_bytes(source: BinaryIO, target: BinaryIO) -> None:
    """The bytes of one open file into another (a seam for tests that simulate a bad copy)."""
    shutil.copyfileobj(source, target, CHUNK)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a new name, a removed one) durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the data itself was synced
    finally:
        os.close(fd)


def copy_verified(source: Path, target: Path, sha1: bytes) -> None:
    """Copy `source` to a new file `target` (never an existing one), fsync, and check the copy's sha1; a copy
    that does not verify is removed (MoveError) and the source is left as it is."""
    with open(source, "rb") as fin:
        try:
            fout = open(target, "xb")
        except FileExistsError:
            raise MoveError("a file is already at the destination") from None
        with fout:
            copy_bytes(fin, fout)
            fout.flush()
            os.fsync(fout.fileno())
    shutil.copystat(source, target)
    fsync_dir(target.parent)
    if file_sha1(target) != sha1:
        target.unlink()
        raise MoveError("the copy does not verify (sha1 differs): the source is kept")


def move_file(source: Path, target: Path, sha1: bytes) -> str:
    """Move `source` to `target` (parents created); never over an existing file. Returns "renamed" or
    "copied" (across file systems: copied, verified, then the source removed)."""
    if os.path.lexists(target):
        raise MoveError("a file is already at the destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
        fsync_dir(target.parent)
        return "renamed"
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    copy_verified(source, target, sha1)
    os.unlink(source)  # only now: the copy is whole and verified
    fsync_dir(source.parent)
    return "copied"


def link_file(source: Path, target: Path, sha1: bytes) -> str:
    """A hard link of `source` at `target` (a verified copy where links cannot be made); "linked" or "copied"."""
    if os.path.lexists(target):
        raise MoveError("a file is already at the destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return "linked"
    except FileExistsError:
        raise MoveError("a file is already at the destination") from None
    except OSError as exc:
        if exc.errno not in NO_HARD_LINK:
            raise
    copy_verified(source, target, sha1)
    return "copied"


def restore_file(original: Path, moved: Path, sha1: bytes) -> str:
    """Undo one move, whatever point it reached: "restored" (moved back, verified), "in place" (it never moved),
    or "in place, copy removed" (a move across file systems was cut short: the source is whole, its partial or
    complete copy goes). MoveError when it would overwrite or lose something; then both are left as they are."""
    at_original, at_moved = os.path.lexists(original), os.path.lexists(moved)
    if at_original and not at_moved:
        return "in place"
    if not at_original and not at_moved:
        raise MoveError("missing: neither at its original path nor where it was moved")
    if at_original:
        if file_sha1(original) != sha1:
            raise MoveError("a different file now exists at the original path: both are left as they are")
        moved.unlink()  # the original is whole and verified: the copy adds nothing
        return "in place, copy removed"
    if file_sha1(moved) != sha1:
        raise MoveError("the moved file changed since it was moved (sha1 differs): left where it is")
    move_file(moved, original, sha1)
    return "restored"


def unlink_copy(original: Path, linked: Path, sha1: bytes) -> str:
    """Undo one link: remove `linked` only while the original is there and verifies ("removed"), so that no
    file loses its last copy; "absent" when the link is not there."""
    if not os.path.lexists(linked):
        return "absent"
    if not original.exists():
        raise MoveError("the original is gone: the link is kept (it is the only copy)")
    if not (os.path.samefile(original, linked) or file_sha1(linked) == sha1) or file_sha1(original) != sha1:
        raise MoveError("the files differ from the ones linked: both are left as they are")
    linked.unlink()
    return "removed"
