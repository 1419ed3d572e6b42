"""One-line StorageErrors for the local backend's OSErrors, and the layout's reserved names."""

from __future__ import annotations

from backup_exporter.core.errors import StorageError

# The metadata of a committed upload lives beside it under this suffix; such files are never objects.
META_SUFFIX = ".meta.json"


def oserror(what: str, exc: OSError) -> StorageError:
    """Return a one-line StorageError for an OSError met while doing `what`."""
    reason = exc.strerror or type(exc).__name__
    return StorageError(f"local storage: cannot {what}: {reason}")
