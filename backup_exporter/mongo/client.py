"""Building a MongoDB client that has not connected yet."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from backup_exporter.core.errors import ConfigError
from backup_exporter.mongo.errors import describe_error


def make_client(uri: str, timeout_s: float, appname: str) -> MongoClient[dict[str, Any]]:
    """Return a client that has not connected yet, with timeouts of timeout_s.

    Raises ConfigError (secret-free) when the URI or an option in it is invalid.
    """
    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        return MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                           appname=appname, connect=False)
    except (PyMongoError, ValueError, TypeError) as exc:
        # pymongo reports some URI mistakes (a bad port) as plain ValueError.
        raise ConfigError([f"invalid MongoDB URI or client option: {describe_error(exc, uri)}"]) from None


