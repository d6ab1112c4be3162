"""Refusing work that cannot fit in memory, before any of it is allocated.

Estimates are in float64 bytes and deliberately coarse (the dominant arrays only): their job is
to turn ``--param dim=1000000`` or ``--steps 10**12`` into a one-line error naming the size,
instead of an allocator traceback minutes later.
"""
from __future__ import annotations

import os

from .params import ConfigError

FLOAT64 = 8


def available_bytes() -> int | None:
    """Memory available to new allocations on this machine (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(size: float) -> str:
    """``12.3 GB``: a byte count in decimal units."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000:
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} PB"


def check_fits(what: str, needed: int) -> None:
    """ConfigError when ``needed`` bytes exceed the memory available now (nothing checked if unknown)."""
    available = available_bytes()
    if available is not None and needed > available:
        raise ConfigError(f"{what} needs about {human(needed)} of memory; {human(available)} is available")
