"""What a MongoDB Database Tool's error output says went wrong. mongodump and mongorestore exit 1 for every
failure; their "Failed: ..." or "error connecting to host: ..." line says which, and the project gives the
same exit codes as its native engines: 77 for refused credentials, 69 for a server never reached."""

from __future__ import annotations

import re

from backup_exporter.core.errors import AuthenticationFailed, BackupError, SourceUnavailable

# Refused credentials are checked first: the tools report them inside a "failed to connect" line.
_AUTH_FAILURE = re.compile(r"AuthenticationFailed|auth error|[Aa]uthentication failed|not authorized|Unauthorized")
_UNREACHABLE = re.compile(r"can't create session|server selection error|no reachable servers"
                          r"|error connecting to host")


def tool_failure(returncode: int, stderr_text: str, hosts: str, message: str) -> BackupError | None:
    """Return AuthenticationFailed or SourceUnavailable, its message naming `hosts` before the tool's own
    `message`, when a tool that exited with `returncode` says so in `stderr_text`; else None."""
    if returncode != 1:
        return None
    if _AUTH_FAILURE.search(stderr_text):
        return AuthenticationFailed(f"MongoDB at {hosts} refused the credentials: {message}")
    if _UNREACHABLE.search(stderr_text):
        return SourceUnavailable(f"MongoDB at {hosts} is unreachable: {message}")
    return None
