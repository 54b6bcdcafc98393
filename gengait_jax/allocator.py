"""glibc malloc tuned for XLA:CPU: big buffers reused from the heap, not fresh `mmap`s.

XLA:CPU allocates its temporaries on every call; glibc serves the large ones with new `mmap`s,
so every train step pays page faults on freshly zeroed pages (half of the demo step on 2 cores,
BUILD_NOTES "Performance"). `tune()` sets, through `mallopt`, one arena, no mmap for large
blocks and no trimming; memory then stays at its peak. It must run before JAX allocates, so
`gengait_jax/__init__.py` calls it first. `GENGAIT_JAX_MALLOC=0` leaves malloc as it is;
non-glibc platforms are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters (glibc malloc.h); values are C ints.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))


def tune() -> bool:
    """Applies the settings; True if glibc accepted all of them."""
    if os.environ.get("GENGAIT_JAX_MALLOC", "1") == "0" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in _SETTINGS)
