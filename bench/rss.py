"""The peak resident memory of this process, as the benchmarks print it.

The kernel's high-water mark of this process's own memory (``VmHWM`` in /proc/self/status), not
``getrusage``'s ``ru_maxrss``: Linux carries ``ru_maxrss`` over an exec, so a measuring child started
by a parent that holds a generated org would report the parent's size. Where /proc is absent (macOS)
``ru_maxrss`` is all there is.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def peak_rss_mib() -> float:
    """The most memory this process has had resident so far, in MiB."""
    if _STATUS.exists():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
