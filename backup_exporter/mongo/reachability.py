"""Whether any member of a deployment answers at all. mongodump and mongorestore 100.x can keep retrying a
refused or silent server past the URI's serverSelectionTimeoutMS (and past SIGTERM), which would hold a run
until the plan's timeout and a restore for ever: the mongodump engine asks while mongodump has written
nothing, the mongorestore restore asks before it starts mongorestore."""

from __future__ import annotations

from pymongo import ReadPreference
from pymongo.errors import ConnectionFailure, PyMongoError

from backup_exporter.core.errors import BackupError, SourceUnavailable
from backup_exporter.mongo.client import make_client
from backup_exporter.mongo.errors import map_pymongo_error


def unreachable(uri: str, timeout_s: float) -> SourceUnavailable | None:
    """Return SourceUnavailable (its message names the hosts and pymongo's reason, no secret) when no member
    of the deployment at `uri` answers a ping within `timeout_s`; else None. Any other outcome (refused
    credentials, a URI pymongo cannot read, a server error) is None: the dump tool reports those itself.
    Never raises."""
    try:
        client = make_client(uri, timeout_s, "backup_exporter-reachability")
    except BackupError:
        return None
    try:
        # Any member will do (NEAREST): the question is whether the deployment answers, not whether the
        # member mongodump's read preference wants is up.
        client.admin.command("ping", read_preference=ReadPreference.NEAREST)
        return None
    except ConnectionFailure as exc:
        error = map_pymongo_error(exc, uri, what="checking that MongoDB answers", started=False)
        return error if isinstance(error, SourceUnavailable) else None
    except PyMongoError:
        return None
    finally:
        client.close()
