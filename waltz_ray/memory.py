"""This process's resident memory, for the ``memory/*_peak_rss_mb`` metrics (Linux; no Ray needed).

``peak_rss_mb``: the high-water mark of the resident set since the process started (``getrusage`` ``ru_maxrss``,
kilobytes on Linux); ``current_rss_mb``: the resident set now (``/proc/self/statm``, pages). Both in MiB.
"""

from __future__ import annotations

import os
import resource
import sys

MB = 1024.0 * 1024.0


def peak_rss_mb() -> float:
    """The process's peak resident set size, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / MB if sys.platform == "darwin" else peak / 1024.0


def current_rss_mb() -> float:
    """The process's resident set size now, MiB (``/proc/self/statm``'s second field, in pages); the peak where
    ``/proc`` is missing."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def memory_report() -> dict[str, float]:
    return {"peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb()}


class ReportsMemory:
    """Mixin of the Ray host classes: ``memory()`` answers this actor's process's RSS (``memory_report``)."""

    def memory(self) -> dict[str, float]:
        return memory_report()
