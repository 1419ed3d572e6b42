"""The mongodump subprocess engine: `mongodump --archive` to stdout, gzip-compressed here with ISA-L (or by
mongodump itself with `--gzip` when asked), streamed onward as produced. Either way the stream is the same
`--archive --gzip` format."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from backup_exporter.archive import DEFAULT_COMPRESSION_LEVEL
from backup_exporter.core import argv as commands
from backup_exporter.engines.process import ProcessEngine


class MongodumpEngine(ProcessEngine):
    name = "mongodump"

    def __init__(self, uri: str, *, binary: str = "mongodump", include: Sequence[str] = (),
                 exclude: Sequence[str] = (), extra_args: Sequence[str] = (), grace_seconds: float = 10.0,
                 plan: str = "", mongodump_compress: bool = False,
                 compression_level: int = DEFAULT_COMPRESSION_LEVEL) -> None:
        # mongodump's own gzip is one Go thread; ISA-L in our compressor thread is several times faster.
        super().__init__(uri, commands.mongodump_argv(binary, include=include, exclude=exclude,
                                                      extra_args=extra_args, gzip=mongodump_compress),
                         grace_seconds=grace_seconds, plan=plan,
                         compression_level=None if mongodump_compress else compression_level)
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
