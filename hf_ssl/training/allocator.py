"""A steady CPU allocator for training: glibc keeps the memory a step frees instead of handing it back to the system.

A training step on a CPU allocates and frees the same large activation buffers every step. glibc serves a request above
its mmap threshold (32 MiB at most; the MLP activations of the recipes' ViT over 256 images are 51 MB) with a mapping of
its own, unmapped again on free, and it returns freed memory at the heap's top above ``M_TRIM_THRESHOLD``: the next step
faults every page of those buffers in again: 244k minor page faults per FixMatch step of the recipes' ViT, against about
1k with the settings below, which took hf_ssl's SimCLR and DINO steps from 0.89x / 0.86x lightly's speed to 1.03x /
0.96x (``benchmarks/README.md``). The usual remedies act before the process starts (``GLIBC_TUNABLES``, or jemalloc /
tcmalloc through ``LD_PRELOAD``), so they need the user's shell; glibc's ``mallopt`` sets the same two parameters from
inside the process, for the allocations that follow:

- ``M_MMAP_MAX = 0``: large blocks come from the heap, where a freed one is reused, not from a mapping of their own;
- ``M_TRIM_THRESHOLD`` at its largest: freed memory at the heap's top stays with the process.

The cost is the one of every caching allocator (PyTorch's CUDA one included): the process keeps its peak heap, so its
resident memory does not fall between steps. Elsewhere than glibc (musl, macOS, Windows) nothing is changed.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: The largest value ``mallopt`` takes (an ``int``): freed memory is trimmed only past 2 GiB at the heap's top.
LARGEST_TRIM_THRESHOLD = 2**31 - 1

_applied = False


def keep_freed_cpu_memory() -> bool:
    """Set glibc's ``M_MMAP_MAX`` to 0 and ``M_TRIM_THRESHOLD`` to its largest value for this process (see the module
    docstring), once; returns whether glibc took both settings (False elsewhere than glibc)."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        return False
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD))
    if _applied:
        logger.info("glibc malloc keeps freed memory in the process (steady_cpu_allocator): no page faults per step "
                    "for large activations")
    return _applied
