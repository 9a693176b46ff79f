"""Keep freed memory in the process while training on CPU (glibc malloc tuning).

glibc serves every allocation above its mmap threshold (128 KiB, raised adaptively up to
32 MiB) with a fresh ``mmap`` and hands it back to the kernel on ``free``; it also trims the
top of the heap once 128 KiB or more is free there. A training step allocates and frees the
same large tensors every step (activations, the 45 MiB embedding gradient, its 90 MiB fp32
copy), so each step pays the kernel's page faults again: measured here, converting the
embedding gradient to fp32 takes 44 ms into fresh memory and 12 ms into reused memory. The
PyTorch CPU performance guide's answer is a caching allocator (jemalloc, tcmalloc); this
module gets the same effect from glibc itself with ``mallopt`` for the duration of training,
then returns the memory with ``malloc_trim`` and sets thresholds glibc would have grown to
by itself. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30  # serve allocations up to 1 GiB from the heap and never trim it while training
_AFTER = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}  # glibc's adaptive ceilings


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only; musl lacks it)
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def retain_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed memory stays in the process for reuse; yields whether it applied."""
    libc = _glibc() if enabled else None
    if libc is None or not (libc.mallopt(M_MMAP_THRESHOLD, _KEEP) and libc.mallopt(M_TRIM_THRESHOLD, _KEEP)):
        yield False
        return
    log.info("glibc malloc: freed memory kept in the process while training")
    try:
        yield True
    finally:
        for option, value in _AFTER.items():
            libc.mallopt(option, value)
        libc.malloc_trim(0)
