"""The mongodump subprocess engine: `mongodump --archive --gzip` to stdout, streamed onward as produced."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from backup_exporter.core import argv as commands
from backup_exporter.engines.process import ProcessEngine


class MongodumpEngine(ProcessEngine):
    name = "mongodump"

    def __init__(self, uri: str, *, binary: str = "mongodump", include: Sequence[str] = (),
                 exclude: Sequence[str] = (), extra_args: Sequence[str] = (), grace_seconds: float = 10.0,
                 plan: str = "") -> None:
        super().__init__(uri, commands.mongodump_argv(binary, include=include, exclude=exclude,
                                                      extra_args=extra_args),
                         grace_seconds=grace_seconds, plan=plan)
        self.binary = binary

    def tool_version(self) -> str:
        """Return 'mongodump <version>' as the binary reports it, or 'mongodump unknown'."""
        try:
            out = subprocess.run(commands.mongodump_version_argv(self.binary), capture_output=True, timeout=10,
                                 check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return "mongodump unknown"
        match = re.search(rb"version:?\s*([0-9][\w.\-]*)", out.stdout + out.stderr)
        return f"mongodump {match.group(1).decode()}" if match else "mongodump unknown"
