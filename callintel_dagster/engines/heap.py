"""Keep long-lived model workers' memory near what they use (pure Python; no Dagster).

A Spark Python worker lives across many calls and stages. Whisper, the ONNX segmenter and torch
allocate and free hundreds of MB per call from C, and glibc keeps freed heap pages mapped: on a
10-minute chunk, a worker stayed at 1.2 GB after its task, of which `malloc_trim` gave 0.33 GB back.
glibc also opens up to 8 heap arenas per core for the libraries' threads, each holding its own
free pages; with two, the same chunk peaked 0.13 GB lower.

Both calls are glibc's; elsewhere (macOS, musl) they are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt's parameter number for the arena limit (glibc's malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
WORKER_HEAP_ARENAS = 2


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def limit_heap_arenas(arenas: int = WORKER_HEAP_ARENAS) -> bool:
    """Cap the number of glibc heap arenas this process opens from now on; whether it took effect."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1)


def release_free_heap() -> bool:
    """Give the freed pages of every heap arena back to the operating system; whether any were."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
