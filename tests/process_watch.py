"""Watching the processes a test started: their argv, sampled while runs are in progress, to prove that
no secret ever reaches a command line."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def descends_from(pid: int, ancestor: int) -> bool:
    """Return whether process `pid` is `ancestor` or one of its descendants (other programs on the
    machine are not this suite's business)."""
    for _ in range(64):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


class ArgvWatcher:
    """Reads the /proc/*/cmdline of every process this test started, every 20 ms, while in its with-block."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ArgvWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and int(entry.name) != me and descends_from(int(entry.name), me):
                    try:
                        self.seen.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        pass
            time.sleep(0.02)

    def tool_argv(self, name: str) -> list[str]:
        """Return the argv lines seen of the archive-writing tool `name` (mongodump, mongorestore)."""
        return [line for line in self.seen if f"/{name} " in line and "--archive" in line]
