"""rmcore.train.cpu_memory: while training on CPU, freed memory stays in the process (no page faults
for the next step's tensors); afterwards it goes back to the kernel."""

from __future__ import annotations

import ctypes
import os
import sys

import pytest
import torch

from rmcore.train.cpu_memory import retain_freed_memory

GLIBC = sys.platform.startswith("linux") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")
pytestmark = pytest.mark.skipif(not GLIBC, reason="malloc tuning applies to glibc (Linux) only")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_free_mb() -> float:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().fordblks / 2**20


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _free_a_64mb_tensor() -> None:
    t = torch.empty(64 << 20, dtype=torch.uint8)
    t.fill_(1)
    del t


def test_freed_tensors_stay_in_the_process_only_while_training():
    before = _heap_free_mb()
    _free_a_64mb_tensor()  # glibc default: a 64 MB block is mmapped and unmapped on free
    assert _heap_free_mb() < before + 32
    with retain_freed_memory() as applied:
        assert applied
        _free_a_64mb_tensor()
        assert _heap_free_mb() >= 64  # kept for the next allocation of that size
        inside = _rss_mb()
    assert _rss_mb() < inside - 48  # handed back to the kernel afterwards (malloc_trim)


def test_off_leaves_malloc_alone():
    with retain_freed_memory(enabled=False) as applied:
        assert not applied
        before = _heap_free_mb()
        _free_a_64mb_tensor()
        assert _heap_free_mb() < before + 32
