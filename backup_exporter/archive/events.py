"""What an archive holds, as the reader hands it out and the writer takes it in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backup_exporter.archive.format import FORMAT_VERSION, render_metadata


@dataclass(frozen=True)
class ArchiveHeader:
    """The archive's header document."""

    concurrent_collections: int = 1
    version: str = FORMAT_VERSION
    server_version: str = ""
    tool_version: str = ""


@dataclass
class CollectionMeta:
    """One collection of the prelude; `metadata` is the parsed metadata JSON, in mongodump's key order."""

    db: str
    collection: str
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    type: str = "collection"

    @classmethod
    def build(cls, db: str, collection: str, *, options: dict[str, Any] | None = None,
              indexes: Sequence[dict[str, Any]] = (), uuid: str | None = None,
              type: str = "collection") -> CollectionMeta:
        """Return the metadata mongodump would write for a collection.

        mongodump's Go struct orders the keys options (omitted when empty), indexes, uuid (omitted when
        unknown), collectionName, type; byte-equal archives depend on keeping that order.
        """
        metadata: dict[str, Any] = {}
        if options:
            metadata["options"] = dict(options)
        metadata["indexes"] = [dict(index) for index in indexes]
        if uuid:
            metadata["uuid"] = uuid
        metadata["collectionName"] = collection
        metadata["type"] = type
        return cls(db, collection, metadata, 0, type)

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    @property
    def options(self) -> dict[str, Any]:
        options = self.metadata.get("options") or {}
        return dict(options) if isinstance(options, dict) else {}

    @property
    def indexes(self) -> list[dict[str, Any]]:
        indexes = self.metadata.get("indexes") or []
        return [dict(i) for i in indexes if isinstance(i, dict)]

    @property
    def uuid(self) -> str | None:
        value = self.metadata.get("uuid")
        return value if isinstance(value, str) else None

    def metadata_json(self) -> str:
        """Return the metadata string as stored in the archive."""
        return render_metadata(self.metadata)


@dataclass(frozen=True)
class SegmentStart:
    """A namespace segment begins; the documents that follow belong to it until the next event type."""

    db: str
    collection: str
    offset: int

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"


@dataclass(frozen=True)
class Document:
    """One document's raw BSON bytes, exactly as stored."""

    db: str
    collection: str
    raw: bytes
    offset: int

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"


@dataclass(frozen=True)
class NamespaceEnd:
    """A namespace's EOF block: `crc` is what the archive stores, `computed_crc` what its data gives."""

    db: str
    collection: str
    documents: int
    bytes: int
    crc: int  # signed int64, as stored
    computed_crc: int  # signed int64
    offset: int

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    @property
    def crc_ok(self) -> bool:
        return self.crc == self.computed_crc


ArchiveEvent = ArchiveHeader | CollectionMeta | SegmentStart | Document | NamespaceEnd
