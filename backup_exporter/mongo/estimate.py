"""How much a dump will read: documents and data bytes of the selected collections, from the server's stats.

The same selection as the dump engines: every database but admin, local and config; real collections only
(no views, no system.*); the plan's include/exclude patterns. Sizes are the uncompressed BSON data sizes
the server reports (`$collStats` storageStats, else the `collStats` command), which is what a dump's
documents add up to, so "source bytes done / estimated" compares like with like. An estimate is only an
estimate: collections grow during a dump, and servers differ in how exact their counts are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from backup_exporter.mongo.client import make_client
from backup_exporter.mongo.errors import map_pymongo_error
from backup_exporter.mongo.namespaces import ns_selected

NOT_DUMPED_DATABASES = frozenset({"admin", "local", "config"})


@dataclass(frozen=True)
class NamespaceEstimate:
    namespace: str
    documents: int
    size_bytes: int | None  # None: the server reported no usable data size


@dataclass(frozen=True)
class WorkEstimate:
    """The expected work of one dump; totals over the selected collections."""

    namespaces: tuple[NamespaceEstimate, ...] = ()

    @property
    def documents(self) -> int:
        return sum(ns.documents for ns in self.namespaces)

    @property
    def size_bytes(self) -> int | None:
        """Return the total data size, or None when any collection's size is unknown."""
        sizes = [ns.size_bytes for ns in self.namespaces]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


def selected_namespaces(client: MongoClient[dict[str, Any]], include: Sequence[str] = (),
                        exclude: Sequence[str] = ()) -> list[str]:
    """Return the sorted 'db.collection' names a dump of the deployment reads. Raises PyMongoError."""
    found: list[str] = []
    for db_name in sorted(client.list_database_names()):
        if db_name in NOT_DUMPED_DATABASES:
            continue
        for info in client[db_name].list_collections():
            name = str(info.get("name", ""))
            if info.get("type", "collection") != "collection" or name.startswith("system."):
                continue
            if ns_selected(f"{db_name}.{name}", include, exclude):
                found.append(f"{db_name}.{name}")
    return sorted(found)


def namespace_estimate(client: MongoClient[dict[str, Any]], namespace: str) -> NamespaceEstimate:
    """Return the documents and data size of one collection. Raises PyMongoError."""
    db_name, _, coll = namespace.partition(".")
    count: int | None = None
    size: int | None = None
    try:
        for stats in client[db_name][coll].aggregate([{"$collStats": {"storageStats": {}}}]):
            storage = stats.get("storageStats") or {}
            count = _number(storage.get("count"))
            size = _number(storage.get("size"))
            break
    except OperationFailure:
        pass  # a server without $collStats: the command below
    if count is None or size is None or (size == 0 and count > 0):
        # A collection that holds documents has a data size above 0; a 0 here means "not reported".
        try:
            stats = client[db_name].command("collStats", coll)
            count = _number(stats.get("count")) if count is None else count
            size = _number(stats.get("size"))
        except OperationFailure:
            pass
    if count is None:
        count = client[db_name][coll].estimated_document_count()
    if size == 0 and count > 0:
        size = None
    return NamespaceEstimate(namespace, count, size)


def estimate_work(uri: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
                  timeout_s: float = 10.0) -> WorkEstimate:
    """Return the expected work of dumping the selected collections at `uri`.

    Raises SourceUnavailable, AuthenticationFailed or another BackupError (no secrets in the message).
    """
    client = make_client(uri, timeout_s, "backup_exporter-estimate")
    try:
        namespaces = selected_namespaces(client, include, exclude)
        return WorkEstimate(tuple(namespace_estimate(client, ns) for ns in namespaces))
    except PyMongoError as exc:
        raise map_pymongo_error(exc, uri, what="estimating the dump", started=False) from None
    finally:
        client.close()


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
