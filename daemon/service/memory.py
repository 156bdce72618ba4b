"""glibc allocator settings for a process that allocates and frees a frame-sized buffer for every frame.

A decoded 720p frame is 2.7 MB. glibc serves blocks that large with mmap and, by default, hands freed
memory at the top of a heap back to the kernel, so new frames fault their pages in again: a dozen or more page
faults per frame in the no-op daemon, where a bare decode loop reuses one hot buffer (`edgewatch bench
overhead` prints the daemon's figure; tests/daemon/service/test_memory.py shows the pattern). Raising the mmap and
trim thresholds keeps freed frame buffers in the process for the next frame. The cost is that freed memory
is kept at its high-water mark, which the bounded queues cap.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit: a 4K frame (24 MB) still fits
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_frame_buffers() -> bool:
    """Apply the thresholds; False (nothing changed) where the C library is not glibc or refuses them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
        gnu_get_libc_version = ctypes.CDLL(None).gnu_get_libc_version
    except (OSError, AttributeError):
        log.debug("not glibc: allocator left as it is")
        return False
    gnu_get_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                   and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    log.debug("glibc %s: frame buffers kept between frames: %s", gnu_get_libc_version().decode(), applied)
    return applied
