"""glibc's allocator told to keep a CPU model's freed activations for the next forward pass, not the kernel."""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest M_MMAP_THRESHOLD glibc takes on 64-bit (HEAP_MAX_SIZE / 2): blocks up to this size come from the
# heap and are reused; larger ones are still mapped afresh each time.
MMAP_THRESHOLD = 32 << 20
# The user's own allocator choice, which is left alone: glibc's tunables, or another malloc preloaded.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
OPT_OUT = "DINOCURATE_KEEP_FREED_MEMORY"  # "0": leave glibc's defaults

_applied: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Keep freed memory in the process for reuse (glibc only; once per process; forked workers inherit it).

    A forward pass allocates its activations afresh (torch has no caching allocator on the CPU) and frees them
    at its end. By default glibc maps each block above its adaptive threshold straight from the kernel and
    gives freed heap back past a trim threshold, so every pass faults its activations in again as zeroed
    pages, tens of thousands of minor faults per pass (docs/PERFORMANCE.md, allocator). Here blocks up to
    32 MiB come from the heap and the heap is never trimmed, so a pass reuses the pages of the last. The
    process's peak memory is the same (it was reached in every pass); it is simply not handed back between
    passes. Left alone where the user chose: glibc tunables in the environment, a preloaded allocator
    (jemalloc, tcmalloc), or DINOCURATE_KEEP_FREED_MEMORY=0. Returns whether the setting is in force."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(OPT_OUT, "1") == "0":
        log.info("%s=0: glibc's allocator left at its defaults", OPT_OUT)
        return False
    chosen = [name for name in USER_SETTINGS if os.environ.get(name)]
    if os.environ.get("LD_PRELOAD"):
        chosen.append("LD_PRELOAD")
    if chosen:
        log.info("the allocator is the user's choice (%s): left alone", ", ".join(chosen))
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 as the trim threshold: never trim (mallopt(3))
    _applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
    log.debug("glibc keeps freed memory for reuse: %s", _applied)
    return _applied
