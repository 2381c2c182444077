"""Files and folders the user names (labels, keys, search results, outputs): read or made, or one line why not."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from pipeline.errors import InputError, MissingInputError


def unreadable(path: str | os.PathLike, what: str, exc: Exception) -> InputError:
    """`path` is not the `what` it should be: one line with the reader's reason (its first sentence only:
    pyarrow's run to several; never the bytes of a binary file)."""
    reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
    binary = next((i for i, c in enumerate(reason) if not c.isprintable()), None)
    if binary is not None:  # a CSV reader quoting the bytes of a binary file
        reason = reason[:binary].rsplit(": ", 1)[0]
    return InputError(f"{path} is not a readable {what} ({reason})")


def read_user_table(path: str | os.PathLike, what: str, read: Callable[[Path], pa.Table]) -> pa.Table:
    """`read(path)` of a file the user named as a `what`; a missing path, a folder or a file that `read` cannot
    parse (another kind of file, empty, damaged) is one line naming it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder: give the file")
    if not path.exists():
        raise MissingInputError(f"{what} {path} does not exist")
    try:
        return read(path)
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise unreadable(path, what, exc) from exc


def make_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `path` (and its parents) unless it exists; a file in the way, permissions or a read-only file system
    are one line naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder: choose another")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the {what} {path}: {exc.strerror or exc}; choose another") from exc
    return path
