"""Who holds a plan's lock: the description a run records on it, and whether that process is gone.

A lock held by a run killed on this host (SIGKILL, the OOM killer) outlives it on Azure until its lease
expires; a process that no longer exists here cannot be renewing it, so readers can say so at once.
"""

from __future__ import annotations

import os
import re
import socket

_HOLDER = re.compile(r"(\S+) pid (\d+) \(.*\)")


def describe(trigger: str) -> str:
    """Return this process as a lock holder: '<host> pid <pid> (<trigger>)'."""
    return f"{socket.gethostname()} pid {os.getpid()} ({trigger})"


def gone_pid(holder: str | None) -> int | None:
    """Return the pid of `holder` (as describe() wrote it) when it names a process of this host that no
    longer exists, else None: alive, on another host, or not a description of ours.

    A pid reused by another process counts as alive: the lock is then left to expire, never broken.
    """
    match = _HOLDER.fullmatch(holder or "")
    if match is None or match.group(1) != socket.gethostname():
        return None
    pid = int(match.group(2))
    if pid == os.getpid():
        return None  # this very process holds it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except OSError:  # it exists, owned by another user
        return None
    return None
