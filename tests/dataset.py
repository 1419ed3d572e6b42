"""A small dataset of three databases with indexes, options and most BSON types, loaded into SecantusDB."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from decimal import Decimal
from typing import Any

from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, MongoClient

RAW = CodecOptions(document_class=RawBSONDocument)


def _doc(i: int) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "n": i,
        "big": Int64(2**40 + i),
        "price": Decimal128(Decimal(f"{i}.99")),
        "at": dt.datetime(2126, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i),
        "bin": Binary(bytes([i % 256]) * 8),
        "uuid": Binary(uuid.UUID(int=i).bytes, 4),
        "re": Regex("^a.*z$", "i"),
        "ts": Timestamp(1700000000 + i, 1),
        "lo": MinKey(),
        "hi": MaxKey(),
        "tags": ["ä", "日本", ["nested", {"deep": i}]],
        "sub": {"a": {"b": [1, 2.5, None, True]}},
        "empty": {"list": [], "doc": {}, "str": ""},
        "email": f"user{i}@example.org",
        "status": "paid" if i % 3 == 0 else "open",
        "age": i % 90,
    }


def load(client: MongoClient, prefix: str, per_collection: int = 60) -> dict[str, int]:  # type: ignore[type-arg]
    """Create <prefix>_shop, <prefix>_crm, <prefix>_analytics; return documents per namespace."""
    shop, crm, analytics = client[f"{prefix}_shop"], client[f"{prefix}_crm"], client[f"{prefix}_analytics"]
    shop.users.insert_many([_doc(i) for i in range(per_collection)])
    shop.users.create_index("email", unique=True)
    shop.users.create_index([("age", ASCENDING), ("at", DESCENDING)], name="age_at")
    shop.orders.insert_many([_doc(i) for i in range(per_collection)])
    shop.orders.create_index("email", partialFilterExpression={"status": "paid"}, name="paid_by_email")
    shop.sessions.insert_many([_doc(i) for i in range(per_collection // 2)])
    shop.sessions.create_index("at", expireAfterSeconds=3600)
    crm.create_collection("contacts", validator={"$jsonSchema": {"bsonType": "object", "required": ["n"]}})
    crm.contacts.insert_many([_doc(i) for i in range(per_collection)])
    analytics.create_collection("capped_events", capped=True, size=1 << 20)
    analytics.capped_events.insert_many([_doc(i) for i in range(per_collection)])
    analytics.create_collection("empty")
    return namespace_counts(client, prefix)


def namespace_counts(client: MongoClient, prefix: str) -> dict[str, int]:  # type: ignore[type-arg]
    counts = {}
    for db_name in client.list_database_names():
        if db_name.startswith(prefix + "_"):
            for coll in client[db_name].list_collection_names():
                counts[f"{db_name}.{coll}"] = client[db_name][coll].count_documents({})
    return counts


def digest(client: MongoClient, ns: str) -> str:  # type: ignore[type-arg]
    """Return an order-independent sha256 over the raw BSON of every document of ns."""
    db_name, coll = ns.split(".", 1)
    hashes = sorted(hashlib.sha256(d.raw).digest() for d in client[db_name].get_collection(coll, RAW).find())
    return hashlib.sha256(b"".join(hashes)).hexdigest()


def drop(client: MongoClient, prefix: str) -> None:  # type: ignore[type-arg]
    for db_name in client.list_database_names():
        if db_name.startswith(prefix + "_"):
            client.drop_database(db_name)
