"""Process-wide tuning that the command line applies before serving.

A request body is held whole before the app runs (`wsgi.input_terminated`), so a 1 MiB upload
allocates and frees a megabyte or more per request. glibc's malloc returns freed memory at the
top of its heap to the kernel once more than `M_TRIM_THRESHOLD` (128 KiB, or an adaptive value)
is free, and every later request faults fresh zeroed pages back in: on uploads that costs more
than parsing and copying together. Keeping a bounded amount of freed memory for reuse removes
that churn; RSS may then stay up to `TRIM_THRESHOLD` above what is live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Mapping, Optional

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc <malloc.h>)
M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 32 << 20  # free heap kept for reuse before any is returned to the kernel
MMAP_THRESHOLD = 4 << 20  # allocations this large still get their own mapping

# glibc reads these at start-up; a user who set one has chosen their own tuning
MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                    "GLIBC_TUNABLES")


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> Optional[dict]:
    """Tell glibc's malloc to keep freed memory for reuse; returns the thresholds set, or None
    when the environment already tunes malloc or the C library is not glibc."""
    if any(name in environ for name in MALLOC_VARIABLES):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS...): nothing to tune
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both are set: setting either one fixes the other's adaptive value too.
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return None
    return {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
