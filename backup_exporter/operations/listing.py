"""`backupctl list`: a plan's backups newest first, each with the retention policy's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from backup_exporter.core.retention import Candidate, RetentionPolicy, decide
from backup_exporter.repository.backups import plan_backups
from backup_exporter.repository.reading import is_encrypted, recipients_of
from backup_exporter.storage.base import Storage


@dataclass(frozen=True)
class ListedBackup:
    """One backup of a plan, with what the retention policy decides for it."""

    name: str
    time: datetime  # UTC start time, from the name
    size: int  # bytes of the stored object
    sha256: str | None  # from metadata; None when the object carries none
    engine: str | None  # "native" / "mongodump", from metadata
    keep: bool
    reasons: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    encrypted: bool = False  # age-encrypted
    recipients: list[str] = field(default_factory=list)  # fingerprints of the public keys it is encrypted for
    written: datetime | None = None  # when storage wrote it, by storage's clock (its last-modified time)


def list_backups(storage: Storage, prefix: str, plan: str, policy: RetentionPolicy,
                 now: datetime) -> list[ListedBackup]:
    """Return the plan's backups newest first, each with the retention policy's verdict and reasons.

    Only objects named `<prefix>/<plan>/<UTC timestamp>.archive.gz[.age]` are listed. Raises StorageError (or
    AuthenticationFailed) when the listing fails, ValueError when `now` is naive.
    """
    backups = plan_backups(storage, prefix, plan)
    infos = {info.name: info for info, _ in backups}
    decisions = decide([Candidate(info.name, started) for info, started in backups], policy, now)
    listed = []
    for decision in decisions:
        info = infos[decision.name]
        listed.append(ListedBackup(
            name=info.name, time=decision.created, size=info.size,
            sha256=info.metadata.get("sha256") or None, engine=info.metadata.get("engine") or None,
            keep=decision.keep, reasons=list(decision.reasons), metadata=dict(info.metadata),
            encrypted=is_encrypted(info), recipients=recipients_of(info), written=info.last_modified))
    return listed
