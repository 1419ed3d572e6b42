"""The mongodump subprocess engine: `mongodump --archive` to stdout, gzip-compressed here with ISA-L (or by
mongodump itself with `--gzip` when asked), streamed onward as produced. Either way the stream is the same
`--archive --gzip` format."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from backup_exporter.archive import DEFAULT_COMPRESSION_LEVEL
from backup_exporter.core import argv as commands
from backup_exporter.core.errors import BackupError, ConfigError, UsageError
from backup_exporter.engines.process import ProcessEngine
from backup_exporter.mongo.reachability import unreachable
from backup_exporter.mongo.tool_errors import tool_failure
from backup_exporter.mongo.uri import render_hosts
from backup_exporter.system.execute import run_briefly


class MongodumpEngine(ProcessEngine):
    name = "mongodump"

    def __init__(self, uri: str, *, binary: str = "mongodump", include: Sequence[str] = (),
                 exclude: Sequence[str] = (), extra_args: Sequence[str] = (), grace_seconds: float = 10.0,
                 plan: str = "", mongodump_compress: bool = False,
                 compression_level: int = DEFAULT_COMPRESSION_LEVEL, connect_timeout_s: float = 10.0) -> None:
        try:
            # mongodump's own gzip is one Go thread; ISA-L in our compressor thread is several times faster.
            argv = commands.mongodump_argv(binary, include=include, exclude=exclude, extra_args=extra_args,
                                           gzip=mongodump_compress)
        except UsageError as exc:
            raise ConfigError([f"plan {plan}: {exc.message}" if plan else exc.message]) from None
        super().__init__(uri, argv, grace_seconds=grace_seconds, plan=plan,
                         compression_level=None if mongodump_compress else compression_level)
        self.binary = binary
        # mongodump keeps retrying a server that never answers until the plan's timeout: SourceUnavailable
        # when no member of the deployment answers a ping within the plan's connect_timeout.
        self.reachability = functools.partial(unreachable, uri, connect_timeout_s)

    def failure_error(self, returncode: int, stderr_tail: list[str]) -> BackupError:
        """Return AuthenticationFailed or SourceUnavailable when mongodump's own error says so, else
        DumpFailed with its exit code."""
        known = tool_failure(returncode, " ".join(stderr_tail), render_hosts(self.uri),
                             self.failure_message(returncode, stderr_tail))
        return known or super().failure_error(returncode, stderr_tail)

    def tool_version(self) -> str:
        """Return 'mongodump <version>' as the binary reports it, or 'mongodump unknown'."""
        done = run_briefly(commands.mongodump_version_argv(self.binary))
        if done is None:
            return "mongodump unknown"
        match = re.search(rb"version:?\s*([0-9][\w.\-]*)", done[1])
        return f"mongodump {match.group(1).decode()}" if match else "mongodump unknown"
