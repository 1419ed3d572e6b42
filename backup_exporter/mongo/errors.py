"""One mapping from pymongo's errors to the project's exit codes, for dump and restore alike."""

from __future__ import annotations

from pymongo.errors import ConfigurationError, ConnectionFailure, OperationFailure, PyMongoError

from backup_exporter.core.errors import (
    AuthenticationFailed,
    BackupError,
    ConfigError,
    DumpFailed,
    ExitCode,
    SourceUnavailable,
)
from backup_exporter.core.redact import one_line
from backup_exporter.mongo.uri import render_hosts, uri_parts

AUTH_ERROR_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed


def scrub(text: str, uri: str) -> str:
    """Return text with the URI and its password replaced by '***', on one line, shortened."""
    return one_line(text, uri_parts(uri)[1])


def describe_error(exc: BaseException, uri: str) -> str:
    """Return a one-line, secret-free description of a pymongo error."""
    text = str(exc)
    # A server-selection timeout appends the whole topology description; the part before it says why.
    text = text.split(", Timeout:", 1)[0]
    # pymongo appends the client's timeouts, which the project set itself and which only lengthen the line.
    text = text.split(" (configured timeouts:", 1)[0]
    if isinstance(exc, OperationFailure):
        text = text.split(", full error:", 1)[0]
        if exc.code is not None:
            text = f"{text} (code {exc.code})"
    return scrub(text, uri)


def map_pymongo_error(exc: PyMongoError, uri: str, *, what: str, started: bool, hosts: str | None = None,
                      failure: type[BackupError] = DumpFailed) -> BackupError:
    """Return the project exception for a pymongo error.

    Unreachable server -> SourceUnavailable before any data moved, DumpFailed(UNAVAILABLE) after;
    authentication/authorisation failures -> AuthenticationFailed; a bad URI -> ConfigError; anything
    else -> DumpFailed (DATA). `failure` replaces DumpFailed (the restorer passes RestoreFailed); `hosts`
    replaces the hosts rendered from the URI.
    """
    hosts = hosts or render_hosts(uri)
    detail = describe_error(exc, uri)
    if isinstance(exc, ConnectionFailure):
        if started:
            return failure(f"lost connection to MongoDB at {hosts} while {what}: {detail}", ExitCode.UNAVAILABLE)
        return SourceUnavailable(f"MongoDB at {hosts} is unreachable: {detail}")
    if isinstance(exc, OperationFailure) and exc.code in AUTH_ERROR_CODES:
        return AuthenticationFailed(f"MongoDB at {hosts} refused the credentials while {what}: {detail}")
    if isinstance(exc, ConfigurationError):
        return ConfigError([f"invalid MongoDB URI or client option: {detail}"])
    return failure(f"MongoDB at {hosts} failed while {what}: {detail}")


