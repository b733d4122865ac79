r"""Process-wide settings that make training steps cheaper on CPU.

glibc's ``malloc`` serves every block above its mmap threshold (dynamic, at most 32 MiB)
with a fresh ``mmap`` and gives it back with ``munmap`` when freed, and it trims the top of
the heap back to the operating system. A training step of a graph model allocates the same
large temporaries every step (``[anchors, N]`` logits, whole-table gradients), so each step
page-faults them in again (docs/RESULTS.md, "Speed of the COPF / PKEF code readings", has
the measurement: a loop of COPF's eq-8 logits ran 2.4x faster once freed memory was
kept).

:func:`keep_freed_memory` asks glibc (``mallopt``) to serve large blocks from the heap and
never to trim it, the run-time equivalent of ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=...``. The cost: the process keeps its peak heap (resident memory
does not shrink after a peak). ``mbgraph train`` calls it at start-up; set
``MBGRAPH_KEEP_FREED_MEMORY=0`` to leave the allocator as it is. Elsewhere than glibc it does
nothing.

:func:`bound_onednn_caches` turns off the per-shape kernel caches of oneDNN, through which
PyTorch runs many CPU matrix products: PyTorch's primitive cache (``LRU_CACHE_CAPACITY``) and
oneDNN's own (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) keep one compiled kernel with its buffers
per input shape, 1,024 each by default. Batches whose shapes change from step to step (a graph
model's pairs per user batch, an EBM's real positions and non-empty behavior views) make the
caches only grow. Measured (docs/RESULTS.md, issues 14 and 16): a COPF cart -> buy run at
1,024-user batches under bf16 autocast reached 4.7 GB resident against 0.9 GB in float32 (with
both caches off the same four epochs peaked at 0.84 GB, 2.2 GB with the defaults, in the same
time per epoch and with the same metrics); an all-cuts EBM on ml-latest-small in float32 grew
by ~30 MB a step until the kernel killed it at 22.8 GB, and stays at ~0.83 GB with the caches
off, 16% faster a step. Every CPU :class:`~mbgraph.training.Trainer` and ``mbgraph train``
call it. The variables are read when oneDNN first runs, so they are set before the process's
first product; a value already in the environment is kept.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: the cache sizes :func:`bound_onednn_caches` sets (unless already set)
ONEDNN_CACHE_SETTINGS = {'LRU_CACHE_CAPACITY': '1', 'ONEDNN_PRIMITIVE_CACHE_CAPACITY': '0'}

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Keep freed memory in the process (see the module docstring); ``True`` if glibc took
    the settings. Idempotent; ``MBGRAPH_KEEP_FREED_MEMORY=0`` turns it off."""
    global _done
    if _done:
        return True
    if os.environ.get('MBGRAPH_KEEP_FREED_MEMORY', '1') == '0':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):    # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    if ok:
        _done = True
        log.info('glibc keeps freed memory (mmap off, no trimming): large temporaries are '
                 'reused instead of page-faulted every step')
    return ok


def bound_onednn_caches() -> dict:
    """Turn oneDNN's per-shape kernel caches off for this process (see the module docstring)
    unless the environment already sizes them; returns the settings in effect. Has an effect
    only before the process's first oneDNN operation (every CPU ``Trainer`` and ``mbgraph
    train`` call it before their first step)."""
    for name, value in ONEDNN_CACHE_SETTINGS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in ONEDNN_CACHE_SETTINGS}
