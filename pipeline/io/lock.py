"""Exclusive, crash-safe locks on files: held while a process runs, gone when it dies, naming their holder.

`fcntl.flock` locks belong to the open file description, so the kernel drops them when the process exits,
however it exits (kill -9 included): no stale lock files to clean up. On NFS (Linux client ≥ 2.6.12) flock is
carried out as a POSIX byte-range lock through the server (NLM or NFSv4), so it also excludes processes on
other nodes; Lustre needs the `flock` mount option and GPFS supports it natively. The holder (host, pid,
start time, command) is written into the file, so a refused run can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.errors import UserError


class LockedError(UserError):
    """Another process holds the lock."""


def holder_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv)[:300]}


class FileLock:
    """`with FileLock(path, what):` holds an exclusive lock on `path` or raises LockedError at once."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path, self.what = Path(path), what
        self.fd: int | None = None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(self.path)
            os.close(fd)
            raise LockedError(f"{self.what} is in use by another run ({describe_holder(holder)}); wait for it to "
                              f"finish or stop it: two runs into one output would redo or mix each other's "
                              f"work") from None
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

    def __exit__(self, *exc: object) -> None:
        self.release()


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
