"""Process memory helpers for the components that hold a whole corpus.

At a million items the evaluator and the pusher hold embeddings, tables and
served models side by side; these let them give freed memory back and log
where it goes (the `make bench-scale` diagnostics).
"""

import ctypes
import gc
import os

from absl import logging


def return_free_heap() -> None:
    """Hands freed heap pages back to the system (glibc's malloc_trim).

    glibc keeps memory that earlier steps freed (millions of parsed rows,
    a saved model's tables, a scoring batch's temporaries, spread over one
    heap per thread) for reuse, so a process would otherwise creep up to
    its high-water mark and stay there. No-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release_free_memory() -> None:
    """Collects garbage, then return_free_heap()."""
    gc.collect()
    return_free_heap()


def resident_gib() -> float:
    """This process's resident memory in GiB (NaN where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except OSError:
        return float("nan")


def log_memory(component: str, step: str) -> None:
    """Logs this process's resident memory after a step."""
    logging.info("%s: %s, %.2f GiB resident", component, step, resident_gib())
