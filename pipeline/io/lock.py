"""Exclusive, crash-safe locks on files: held while a process runs, gone when it dies, naming their holder.

`fcntl.flock` locks belong to the open file description, so the kernel drops them when the process exits,
however it exits (kill -9 included): no stale lock files to clean up. On NFS (Linux client ≥ 2.6.12) flock is
carried out as a POSIX byte-range lock through the server (NLM or NFSv4), so it also excludes processes on
other nodes; Lustre needs the `flock` mount option and GPFS supports it natively. The holder (host, pid,
start time, command) is written into the file, so a refused run can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import UserError


class LockedError(UserError):
    """Another process holds the lock."""


def holder_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv)[:300]}


class FileLock:
    """`with FileLock(path, what):` holds an exclusive lock on `path` or raises LockedError at once.

    `drop_on_failure()`, when given, is asked as a `with` block ends by an exception: if true, the lock file
    and its folder (when empty) are removed while still held, so that a run that failed before writing
    anything leaves nothing behind. A run that opened the file just before is refused meanwhile; one that
    locks it after its removal sees that the path is gone or new (`acquire` compares inodes) and takes the new
    file."""

    def __init__(self, path: str | os.PathLike, what: str,
                 drop_on_failure: Callable[[], bool] | None = None) -> None:
        self.path, self.what, self.drop_on_failure = Path(path), what, drop_on_failure
        self.fd: int | None = None

    def acquire(self) -> FileLock:
        for _ in range(5):  # the file may be removed by a failing holder between our open and our lock
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # its folder removed in between
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(self.path)
                os.close(fd)
                raise LockedError(f"{self.what} is in use by another run ({describe_holder(holder)}); wait for it "
                                  f"to finish or stop it: two runs into one output would redo or mix each other's "
                                  f"work") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise LockedError(f"{self.what}: its lock file keeps being replaced; try again")
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder_record()) + "\n").encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and self.fd is not None and self.drop_on_failure and self.drop_on_failure():
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only when empty: other ranks' lock files stay
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def is_locked(path: str | os.PathLike) -> bool:
    """True when another process holds the lock on `path` (tested without keeping it)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_holder(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command')}"
