"""What a dump contains: the catalog of a deployment (listDatabases, listCollections, listIndexes) turned
into the archive prelude's CollectionMeta, with mongodump's rules for what is skipped.

mongodump 100.8.0 (``mongodump/prepare.go``, ``shouldSkipSystemNamespace``) dumps every database but
`local` and `config`; in `admin` it skips only `system.keys`; elsewhere it skips `system.*` except
`system.js`, and any name holding `$`. Views are dumped as metadata only (type "view", no indexes, an empty
namespace), so mongorestore recreates them. The native engine follows the same rules so that both engines
keep the same namespaces.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from bson.binary import Binary
from pymongo import MongoClient

from backup_exporter.archive import CollectionMeta
from backup_exporter.core.cancel import interrupted
from backup_exporter.mongo.namespaces import ns_selected

NEVER_DUMPED_DATABASES = frozenset({"local", "config"})
VIEW = "view"


def skipped_system_namespace(db: str, collection: str) -> bool:
    """Return whether mongodump never dumps db.collection (server-owned namespaces)."""
    if db == "admin":
        if collection == "system.keys":
            return True
    elif collection != "system.js" and collection.startswith("system."):
        return True
    return "$" in collection and ".oplog.$" not in collection


def uuid_hex(info: Any) -> str | None:
    """Return the collection UUID of a listCollections `info` document as 32 hex digits, or None."""
    value = info.get("uuid") if isinstance(info, dict) else None
    if isinstance(value, Binary):
        return bytes(value).hex()
    hex_value = getattr(value, "hex", None)  # uuid.UUID when a uuidRepresentation is configured
    return hex_value if isinstance(hex_value, str) else None


def collection_meta(db: str, info: Mapping[str, Any], indexes: Sequence[Mapping[str, Any]]) -> CollectionMeta:
    """Return the prelude entry of one listCollections result: options, indexes (without the legacy
    `ns`), uuid and type ("collection", "view" or "timeseries") as mongodump writes them."""
    kind = str(info.get("type") or "collection")
    return CollectionMeta.build(db, str(info.get("name", "")), options=dict(info.get("options") or {}),
                                indexes=[{k: v for k, v in dict(i).items() if k != "ns"} for i in indexes],
                                uuid=uuid_hex(info.get("info")), type=kind)


def list_catalog(client: MongoClient[dict[str, Any]], include: Sequence[str], exclude: Sequence[str],
                 cancel: threading.Event) -> list[CollectionMeta]:
    """Return the metadata of every selected namespace (collections, views, timeseries), sorted by name.

    Raises pymongo errors as they come (the engine maps them) and Interrupted when `cancel` is set.
    """
    metas: list[CollectionMeta] = []
    for db_name in sorted(client.list_database_names()):
        if db_name in NEVER_DUMPED_DATABASES:
            continue
        if cancel.is_set():
            raise interrupted(cancel)
        db = client[db_name]
        for info in sorted(db.list_collections(), key=lambda i: str(i.get("name", ""))):
            name = str(info.get("name", ""))
            if skipped_system_namespace(db_name, name) or not ns_selected(f"{db_name}.{name}", include, exclude):
                continue
            # A view has no indexes of its own; mongodump writes an empty list for it.
            indexes = [] if info.get("type") == VIEW else list(db[name].list_indexes())
            metas.append(collection_meta(db_name, info, indexes))
    return metas
