"""Memory freed but kept by allocators, handed back to the kernel before a job allocates its largest blocks."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pyarrow as pa


def release_freed_memory() -> None:
    """Arrow's default pool (mimalloc or jemalloc) keeps the memory Arrow freed for Arrow's own later use, and
    glibc keeps freed heap below its trim threshold (Faiss's build and search leave such holes): NumPy's next
    large block cannot reuse either, so it would come on top of resident pages nothing holds (docs/scaling.md).
    Cheap: a walk of the free pages."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim():
    if platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return getattr(libc, "malloc_trim", None)
