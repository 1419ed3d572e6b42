"""Namespace patterns mean the same on both restore engines: each case restores one archive with real
mongorestore and with the native engine, and what each put in the target must be the same."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from backup_exporter.archive import ArchiveHeader, ArchiveWriter, CollectionMeta, GzipStreamWriter
from backup_exporter.core import naming
from backup_exporter.core.argv import mongorestore_argv, tool_config
from backup_exporter.core.errors import ArchiveError, UsageError
from backup_exporter.engines.native import NativeEngine
from backup_exporter.mongo.namespaces import ns_selected
from backup_exporter.operations.restore import restore, restore_targets
from backup_exporter.repository.reading import READ_CHUNK
from backup_exporter.storage.local import LocalStorage
from backup_exporter.system.execute import Command
from tests.mongo_tools import MongoTools

RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
NAME = naming.backup_name("prod", "orders", datetime(2026, 11, 27, 13, 0, tzinfo=UTC))


@dataclass
class Source:
    prefix: str
    storage: LocalStorage


class Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


@pytest.fixture(scope="module")
def source(mongo_client: MongoClient[dict[str, Any]], mongo_uri: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    prefix = f"ag{uuid.uuid4().hex[:8]}"
    src, two = mongo_client[f"{prefix}_src"], mongo_client[f"{prefix}_two"]
    src.users.insert_many([{"u": i} for i in range(5)])
    src.orders.insert_many([{"o": i} for i in range(3)])
    src["c[1]"].insert_one({"literal": True})
    src.c1.insert_one({"glob_would_match": True})
    src["dotted.x"].insert_one({"d": 1})
    two.users.insert_many([{"u": i, "two": True} for i in range(2)])
    sink = Sink()
    NativeEngine(mongo_uri, include=[f"{prefix}_*"]).dump(sink, threading.Event())
    data = b"".join(sink.parts)
    storage = LocalStorage(tmp_path_factory.mktemp("agree"))
    upload = storage.start_upload(NAME)
    upload.write(data)
    upload.commit({"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)), "engine": "native",
                   "plan": "orders"})
    yield Source(prefix, storage)
    for db in (f"{prefix}_src", f"{prefix}_two"):
        mongo_client.drop_database(db)


def restored_state(client: MongoClient[dict[str, Any]], target: str) -> dict[str, list[str]]:
    """{namespace with the target prefix cut to "T": sorted raw-document digests} of every target db."""
    state = {}
    for db in client.list_database_names():
        if db.startswith(target):
            for coll in client[db].list_collection_names():
                docs = client[db].get_collection(coll, codec_options=RAW).find()
                state["T" + db[len(target):] + "." + coll] = sorted(hashlib.sha256(d.raw).hexdigest() for d in docs)
            client.drop_database(db)
    return state


CASES: dict[str, tuple[list[str], list[str], list[str], set[str]]] = {
    # name: (ns_include, ns_from, ns_to, the namespaces expected, "{t}" being the target prefix)
    "include with a trailing star": (["{p}_src.u*"], ["{p}_*"], ["{t}_*"], {"T_src.users"}),
    "star in include matches dots and any database": (["*.users", "*.dotted.*"], ["{p}_*"], ["{t}_*"],
                                                       {"T_src.users", "T_two.users", "T_src.dotted.x"}),
    "brackets are literal, not a glob class": (["{p}_src.c[1]"], ["{p}_*"], ["{t}_*"], {"T_src.c[1]"}),
    "stars pair by position": ([], ["{p}_*.*"], ["{t}_*.*_copy"],
                               {"T_src.users_copy", "T_src.orders_copy", "T_src.c[1]_copy", "T_src.c1_copy",
                                "T_src.dotted.x_copy", "T_two.users_copy"}),
    "a variable used twice in --ns-to": (["{p}_src.orders"], ["{p}_$db$.$coll$"], ["{t}_$db$.$coll$_$db$"],
                                         {"T_src.orders_src"}),
    "variables swapped": (["{p}_two.*"], ["{p}_$db$.$coll$"], ["{t}_$coll$.$db$"], {"T_users.two"}),
    "the last matching rename wins": (["{p}_src.orders", "{p}_two.users"], ["{p}_*", "{p}_src.*"],
                                      ["{t}_a*", "{t}_b.*"], {"T_b.orders", "T_atwo.users"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_both_engines_restore_the_same_namespaces_for(
        case: str, source: Source, mongo_uri: str, mongo_client: MongoClient[dict[str, Any]],
        mongo_tools: MongoTools) -> None:
    include, ns_from, ns_to, expected = CASES[case]
    target = f"tg{uuid.uuid4().hex[:8]}"

    def fill(patterns: list[str]) -> list[str]:
        return [p.replace("{p}", source.prefix).replace("{t}", target) for p in patterns]

    states = {}
    for engine in ("mongorestore", "native"):
        restore(source.storage, NAME, target_uri=mongo_uri, ns_include=fill(include), ns_from=fill(ns_from),
                ns_to=fill(ns_to), mongorestore=mongo_tools.mongorestore if engine == "mongorestore" else None)
        states[engine] = restored_state(mongo_client, target)
    assert set(states["mongorestore"]) == expected
    assert states["native"] == states["mongorestore"]
    assert all(states["native"].values())


@pytest.mark.parametrize(("ns_from", "ns_to"), [
    (["a.$x$_$x$"], ["b.$x$"]),  # a variable twice where it matches
    (["a.$x$"], ["b.$y$"]),  # a variable the match does not define
    (["a.*.*"], ["b.*"]),  # different numbers of stars
    (["a.$x"], ["b.$x"]),  # an odd number of '$'
])
def test_both_engines_refuse_the_patterns_mongorestore_refuses(
        ns_from: list[str], ns_to: list[str], source: Source, mongo_uri: str, mongo_tools: MongoTools) -> None:
    for binary in (mongo_tools.mongorestore, None):
        with pytest.raises(UsageError, match="invalid rename"):
            restore(source.storage, NAME, target_uri=mongo_uri, ns_from=ns_from, ns_to=ns_to, mongorestore=binary)
    # ... and so does mongorestore itself, before reading anything.
    command = Command(mongorestore_argv(mongo_tools.mongorestore, ns_from=ns_from, ns_to=ns_to, dry_run=True),
                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      secret_files={"config": tool_config(mongo_uri)})
    assert command.wait(timeout=60) != 0
    assert any("replacement" in line.lower() or "asterisks" in line.lower() or "dollar" in line.lower()
               for line in command.stderr_tail(5)), command.stderr_tail(5)


def test_a_dollar_in_an_include_pattern_is_refused_by_both_engines(source: Source, mongo_uri: str,
                                                                   mongo_tools: MongoTools) -> None:
    for binary in (mongo_tools.mongorestore, None):
        with pytest.raises(UsageError, match="'\\$' is not allowed"):
            restore(source.storage, NAME, target_uri=mongo_uri, ns_include=["a.$x$"], mongorestore=binary)


def test_the_dump_filters_use_the_same_matcher() -> None:
    assert ns_selected("shop.c[1]", ["shop.c[1]"], []) and not ns_selected("shop.c1", ["shop.c[1]"], [])
    assert ns_selected("shop.a.b", ["shop.*"], []) and not ns_selected("shop.a.b", ["shop.*"], ["*.b"])


def test_restore_asks_about_targets_from_the_prelude_without_reading_the_whole_backup(tmp_path: Path) -> None:
    # Incompressible documents past the first read, then a corrupt tail: a full dry run would fail on
    # it, reading the prelude does not get there.
    out = io.BytesIO()
    gz = GzipStreamWriter(out, 1)
    writer = ArchiveWriter(gz)
    writer.write_prelude(ArchiveHeader(), [CollectionMeta.build("shop", "users"),
                                           CollectionMeta.build("shop", "system.views"),
                                           CollectionMeta.build("crm", "contacts")])
    writer.write_documents("shop", "users", (bson.encode({"_id": i, "b": os.urandom(64 * 1024)}) for i in range(80)))
    for db, coll in (("shop", "users"), ("shop", "system.views"), ("crm", "contacts")):
        writer.end_namespace(db, coll)
    writer.close()
    gz.close()
    data = bytearray(out.getvalue())
    assert len(data) > 4 * READ_CHUNK
    data[-100] ^= 0xFF
    storage = LocalStorage(tmp_path)
    upload = storage.start_upload(NAME)
    upload.write(bytes(data))
    upload.commit({"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data))})
    assert restore_targets(storage, NAME, ns_from=["shop.*"], ns_to=["copy.*"]) == ["copy.users", "crm.contacts"]
    assert restore_targets(storage, NAME, ns_include=["crm.*"]) == ["crm.contacts"]
    with pytest.raises(ArchiveError):
        restore(storage, NAME, target_uri="mongodb://unused/", dry_run=True)
