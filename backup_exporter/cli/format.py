"""How backupctl shows sizes, durations and times to a person."""

from __future__ import annotations

from datetime import UTC, datetime


def human_bytes(n: float) -> str:
    """Return `n` bytes as '512 B', '1.5 KiB', ... '3.2 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def human_age(seconds: float) -> str:
    """Return a duration as '3m7s', '2h5m' or '1d4h' (negative counts as 0)."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s"


def utc(ts: float | None) -> str:
    """Return a Unix time as '2026-12-02T03:00:00Z', or 'never' for None / 0."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "never"
