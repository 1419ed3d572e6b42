"""What metadata a backup carries: the keys written when it is committed, and reading them back.

Every key is a valid Azure metadata name and every value printable ASCII, so the same dict is stored by
every backend. `sha256` and `size` are what verify and restore check the bytes against; the rest says
where the backup came from (README, "How a backup runs").
"""

from __future__ import annotations

from datetime import datetime

from backup_exporter.storage.base import ObjectInfo

SHA256 = "sha256"
SIZE = "size"
PLAN = "plan"
ENGINE = "engine"


def backup_metadata(*, sha256: str, size: int, plan: str, engine: str, tool_version: str, server_version: str,
                    source_host: str, started: datetime, finished: datetime,
                    exporter_version: str) -> dict[str, str]:
    """Return the metadata a backup is committed with."""
    return {
        SHA256: sha256,
        SIZE: str(size),
        PLAN: plan,
        ENGINE: engine,
        "tool_version": tool_version,
        "server_version": server_version,
        "source_host": source_host,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "exporter_version": exporter_version,
    }


def expected_digest(info: ObjectInfo) -> tuple[str | None, int | None]:
    """Return (sha256, size) recorded in the object's metadata; None for a missing or unreadable value."""
    sha = (info.metadata.get(SHA256) or "").strip().lower() or None
    raw_size = (info.metadata.get(SIZE) or "").strip()
    size = int(raw_size) if raw_size.isdigit() else None
    return sha, size
