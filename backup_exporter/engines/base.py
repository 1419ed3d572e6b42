"""The contract every dump engine keeps."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

# Prefix of the last stderr line a child dump engine prints on success: a JSON report of what it dumped.
DUMP_INFO_MARKER = "backup_exporter-dump-info "


class Sink(Protocol):
    """Where an engine writes the gzip-compressed archive bytes as it produces them."""

    def write(self, data: bytes) -> None: ...


@dataclass
class DumpInfo:
    """What an engine reports about a dump that succeeded."""

    engine: str  # "native" or "mongodump"
    tool_version: str
    server_version: str = "unknown"
    source_host: str = "unknown"  # host[:port] list, never credentials
    namespaces: dict[str, int] = field(default_factory=dict)  # "db.coll" -> documents (when known)


class Engine(Protocol):
    name: str

    def dump(self, sink: Sink, cancel: threading.Event) -> DumpInfo:
        """Write a complete `--archive --gzip` stream to sink and return what was dumped.

        Raises DumpFailed (exit code of the tool, or DATA), SourceUnavailable, AuthenticationFailed, or
        Interrupted when `cancel` is set; output written before a raise must be treated as garbage.
        """
        ...
