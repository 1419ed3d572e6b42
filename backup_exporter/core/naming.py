"""Pure naming rules: where a plan's backups, status and lock live, and how names sort by time."""

from __future__ import annotations

import re
from datetime import UTC, datetime

ARCHIVE_SUFFIX = ".archive.gz"
ENCRYPTED_SUFFIX = ".archive.gz.age"  # the same archive, age-encrypted
ARCHIVE_SUFFIXES = (ARCHIVE_SUFFIX, ENCRYPTED_SUFFIX)  # for str.endswith: "is this one of our archives?"
STATUS_NAME = "_status.json"
LOCK_NAME = "_lock"

_STAMP = "%Y-%m-%dT%H-%M-%SZ"
_STAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)(?:-(\d+))?" + re.escape(ARCHIVE_SUFFIX)
                       + "(?:" + re.escape(ENCRYPTED_SUFFIX[len(ARCHIVE_SUFFIX):]) + ")?$")


def plan_prefix(prefix: str, plan: str) -> str:
    """Return the folder holding a plan's objects: '<prefix>/<plan>' (or '<plan>' without prefix)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{plan}" if prefix else plan


def backup_name(prefix: str, plan: str, started: datetime, *, encrypted: bool = False) -> str:
    """Return '<prefix>/<plan>/<UTC timestamp>.archive.gz' (with `encrypted`: '.archive.gz.age'); names sort
    in time order."""
    if started.tzinfo is None:
        raise ValueError("started must be timezone-aware")
    stamp = started.astimezone(UTC).strftime(_STAMP)
    return f"{plan_prefix(prefix, plan)}/{stamp}{ENCRYPTED_SUFFIX if encrypted else ARCHIVE_SUFFIX}"


def is_encrypted_name(name: str) -> bool:
    """Return True for a name of an age-encrypted archive ('.archive.gz.age')."""
    return name.endswith(ENCRYPTED_SUFFIX)


def status_name(prefix: str, plan: str) -> str:
    return f"{plan_prefix(prefix, plan)}/{STATUS_NAME}"


def lock_name(prefix: str, plan: str) -> str:
    return f"{plan_prefix(prefix, plan)}/{LOCK_NAME}"


def time_of(name: str) -> datetime | None:
    """Return the UTC start time encoded in a backup name, or None when the name is not one of ours."""
    match = _STAMP_RE.match(name.rsplit("/", 1)[-1])
    if not match:
        return None
    return datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)


def lock_subject(name: str) -> str:
    """Return how a lock is named in messages: "plan 'prod/orders'" for ``prod/orders/_lock``."""
    head, _, tail = name.rpartition("/")
    if tail == LOCK_NAME and head:
        return f"plan '{head}'"
    return f"lock '{name}'"
