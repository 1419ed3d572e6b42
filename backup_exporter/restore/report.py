"""What a restore reports, whichever engine applied it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RestoredNamespace:
    """One namespace of the archive and where it went."""

    source: str
    target: str
    archive_documents: int  # documents the archive holds for it
    restored_documents: int | None = None  # inserted (native engine; None with mongorestore)
    failed_documents: int = 0  # refused by the server (native engine)
    target_documents: int | None = None  # counted in the target after the restore (check only)
    view: bool = False  # a view: metadata only, its count in the target is not the archive's


@dataclass
class RestoreReport:
    """The result of a restore; `check_mismatches` is empty when the drill found nothing wrong."""

    name: str
    engine: str  # "native" or "mongorestore"
    dry_run: bool
    size: int
    sha256: str
    namespaces: list[RestoredNamespace] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # archive namespaces left out by ns_include
    checked: bool = False
    check_mismatches: list[str] = field(default_factory=list)

    @property
    def check_ok(self) -> bool | None:
        """True/False for a check that ran, None when none was asked for (or the run was a dry run)."""
        return not self.check_mismatches if self.checked else None

    @property
    def documents(self) -> int:
        return sum(ns.archive_documents for ns in self.namespaces)

    def summary(self) -> str:
        """Return one line: what was restored, how, and the check's verdict."""
        what = "dry run of" if self.dry_run else "restored"
        line = (f"{what} {self.name} with {self.engine}: {len(self.namespaces)} namespaces, "
                f"{self.documents} documents")
        if self.checked:
            line += ("; document counts match" if not self.check_mismatches else
                     f"; {len(self.check_mismatches)} count mismatch(es): {'; '.join(self.check_mismatches)}")
        return line
