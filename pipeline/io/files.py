"""Atomic file writes: a temporary name beside the target, fsync, then rename (readers never see half a file)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """`write(tmp_path)` to a temporary file beside `path`, fsync, then rename over `path`.

    Where the file system says no (a file where a folder should be, read-only, permissions, disk full), the
    error is one line for the user naming the path; the temporary file never stays behind."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if exc.errno in _ENVIRONMENT:
            fix = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "choose another output location"
            raise InputError(f"cannot write {path}: {exc.strerror} ({_where(path)}); {fix}") from exc
        raise
    except BaseException:
        _remove(tmp)
        raise


# what the file system answers when the user's output location cannot be written
_ENVIRONMENT = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                errno.EDQUOT}


def _where(path: Path) -> str:
    for parent in [path, *path.parents]:
        if parent.exists():
            return f"{parent} is a file" if parent.is_file() and parent != path else f"under {parent}"
    return "no existing folder above it"


def _remove(tmp: str | None) -> None:
    if tmp and os.path.exists(tmp):
        os.unlink(tmp)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    """A zstd Parquet file, written atomically."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_json_atomic(obj: object, path: str | os.PathLike) -> None:
    """Indented, key-sorted JSON, written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")

    atomic_write(path, write)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """A UTF-8 text file (lists, CSV), written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    atomic_write(path, write)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """A binary file (an .npy made in memory), written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file written by this pipeline."""
    return json.loads(Path(path).read_text())


def hash_file(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 22) -> hashlib._Hash:
    """`hashlib.new(algorithm)` over a file's bytes, read in chunks (any size in bounded memory)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h
