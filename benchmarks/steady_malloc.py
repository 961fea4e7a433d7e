"""Re-run the calling benchmark with glibc's malloc keeping freed memory, so no contender's time includes page faults.

By default glibc hands big freed blocks (a contender's 19 MB output or gradient) back to the OS
and page-faults them in again on the next call, or not, depending on what ran before: on the idle
2-core machine GELU's median forward + backward (1 thread) came out at 15.4-22.7 ms in three runs
of the same command, against ~7 ms when it runs alone and 8.2-8.8 ms with this fix. A 15-repeat run of rational_vs_gelu.py took 245 K
minor page faults with glibc's defaults and 99 K (mostly start-up) with both thresholds raised,
which keeps freed blocks in the heap for every contender alike. ``--system-malloc`` keeps the
defaults.
"""

from __future__ import annotations

import os
import sys

KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}


def active() -> bool:
    """Whether this process runs with freed memory kept (for the benchmark's header)."""
    return all(os.environ.get(k) == v for k, v in KEEP_FREED.items())


def reexec_with_steady_malloc() -> None:
    """Replace this process by the same command with ``KEEP_FREED`` set (once; no-op with --system-malloc)."""
    if "--system-malloc" in sys.argv:
        sys.argv.remove("--system-malloc")
        return
    if active():
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEEP_FREED})
