"""Reuse of freed host memory during a CPU run: glibc's malloc told to keep what the step frees for the next step.

Why: every training step allocates and frees the same large buffers (activations and their gradients, tens to
hundreds of MB each). glibc's malloc serves each block above its mmap threshold (32 MB at most) with a fresh
``mmap`` and unmaps it at ``free``, and gives the top of its heap back to the system once more than the trim
threshold is free there. The kernel then has to zero-fill every page again at the next step. Measured on a
ResNet-50 recipe step (224 px, batch 32, bf16 autocast, 2 threads, AMD EPYC): about 240,000 page faults and
1.3 s of kernel time per step, and which blocks fault depends on the process's allocation history (the
same backward pass faulted 144,000 times in a bare timm script, 238,000 times in the run engine: a 10 % slower
step with the same kernels). With the two settings below: under 6,000 faults, and the backward pass 7 % (bare
timm) to 18 % (the engine) faster.

:func:`freed_memory_reused` sets ``M_MMAP_MAX`` to 0 (no block is mmapped: all come from the heap, which grows
once to the run's peak) and ``M_TRIM_THRESHOLD`` to its largest value (the heap is not trimmed), and on exit
restores glibc's documented defaults (``M_MMAP_MAX`` 65,536, ``M_TRIM_THRESHOLD`` 128 KiB) and calls
``malloc_trim(0)``, which returns the free memory to the system. Outside glibc (macOS, Windows, musl) it does
nothing. The settings are process-wide: a :class:`~gsp_hub.train.engine.Trainer` holds them for the length of
:meth:`~gsp_hub.train.engine.Trainer.run` when it trains on the CPU (``reuse_freed_memory``, on by default).
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

__all__ = ["GLIBC_TUNABLES", "freed_memory_reused", "glibc_malloc_available"]

# mallopt parameters and glibc's defaults (malloc.h, mallopt(3))
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
NEVER_TRIM = 2**31 - 1  # mallopt takes an int
# the same settings for a whole process from its start (environment variable GLIBC_TUNABLES), e.g. one gsp_hub does
# not run, such as timm's train.py in benchmarks/bench_train_vs_timm.py
GLIBC_TUNABLES = f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={NEVER_TRIM}"


@cache
def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (which has ``mallopt`` and ``malloc_trim``), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL("libc.so.6")


def glibc_malloc_available() -> bool:
    """True where :func:`freed_memory_reused` changes anything: Linux with glibc."""
    return _libc() is not None


@contextmanager
def freed_memory_reused(enabled: bool = True) -> Iterator[bool]:
    """While inside, freed host memory stays in the process for the next allocation (no mmap / unmap, no heap
    trimming, so no page faults on reuse); on exit glibc's defaults are restored and the free memory is returned
    to the system. Yields whether the settings were applied (False when ``enabled`` is False or the C library is
    not glibc)."""
    libc = _libc() if enabled else None
    if libc is None:
        yield False
        return
    applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1  # 1: success
    try:
        yield applied
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
