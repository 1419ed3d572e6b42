"""Azure SDK exceptions as one-line, secret-free BackupErrors: the only place that reads their fields."""

from __future__ import annotations

import re
from collections.abc import Sequence

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from backup_exporter.core.errors import AuthenticationFailed, BackupError, StorageError
from backup_exporter.core.redact import one_line

# Error codes (or phrases) with which a service refuses the batch API itself; only then is deleting one
# by one a fallback rather than hiding a real failure.
_BATCH_UNSUPPORTED_CODES = {"NotImplemented", "FeatureNotSupported", "UnsupportedHttpVerb", "NotSupported"}
_BATCH_UNSUPPORTED_PHRASES = ("not supported", "not implemented", "unsupported")


def error_code(exc: BaseException) -> str:
    """Return the service error code of an HTTP error ("BlobNotFound"), or "" when there is none."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # some codes are StorageErrorCode enum members
    return str(code) if code else ""


def status_of(exc: BaseException) -> int | None:
    """Return the HTTP status of an SDK error, or None."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def batch_unsupported(exc: BaseException) -> bool:
    """Return whether `exc` says the blob batch API is not supported (as some emulator versions do)."""
    if not isinstance(exc, HttpResponseError) or status_of(exc) not in (400, 404, 405, 501):
        return False
    if error_code(exc) in _BATCH_UNSUPPORTED_CODES:
        return True
    text = (getattr(exc, "reason", None) or "") + " " + str(getattr(exc, "message", "") or "")
    first_line = text.strip().splitlines()[0].lower() if text.strip() else ""
    return any(phrase in first_line for phrase in _BATCH_UNSUPPORTED_PHRASES)


def refused_deletion(code: str) -> str:
    """Return why the service keeps a blob it was asked to delete, for an error code, or ""."""
    if "Immutab" in code or "LegalHold" in code:
        return ": an immutability policy or legal hold on the container or blob forbids deleting it"
    if code == "LeaseIdMissing":
        return ": the blob is leased"
    return ""


class ErrorMapper:
    """Turns SDK exceptions met on one container into BackupErrors that name it and hide `secrets`."""

    def __init__(self, account: str, container: str, host: str, secrets: Sequence[str]) -> None:
        self.account = account
        self.container = container
        self.host = host
        self._secrets = list(secrets)

    @property
    def where(self) -> str:
        return f"azure://{self.account}/{self.container}"

    def scrub(self, text: str) -> str:
        """Return `text` on one line without secrets (keys, SAS tokens, URL query strings), shortened."""
        # Query strings of storage URLs carry SAS tokens in many shapes: drop them whole.
        text = re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\"]*", r"\1", text)
        return one_line(text, self._secrets, limit=300)

    def error(self, exc: BaseException, what: str) -> BackupError:
        """Return the one-line, secret-free BackupError for `exc` met while doing `what`."""
        if isinstance(exc, BackupError):
            return exc
        # DefaultAzureCredential raises its own ClientAuthenticationError subclasses when no identity works.
        if type(exc).__name__ == "CredentialUnavailableError":
            return AuthenticationFailed(f"Azure Blob {self.where}: no usable Azure credential found")
        if isinstance(exc, ClientAuthenticationError) or status_of(exc) == 403:
            detail = error_code(exc) or type(exc).__name__
            return AuthenticationFailed(f"Azure Blob {self.where}: authentication failed ({detail}) during {what}")
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return StorageError(f"Azure Blob endpoint {self.host} is unreachable: {self._reason(exc)}")
        if isinstance(exc, HttpResponseError):
            code = error_code(exc) or (exc.reason or "error")
            if code == "ContainerNotFound":
                return self.missing_container()
            return StorageError(f"Azure Blob {self.where}: {what} failed: {code} (HTTP {status_of(exc)})")
        return StorageError(f"Azure Blob {self.where}: {what} failed: {self._reason(exc)}")

    def missing_container(self) -> StorageError:
        return StorageError(f"container '{self.container}' does not exist in {self.account}")

    def _reason(self, exc: BaseException) -> str:
        text = str(exc)
        # Connection errors embed object reprs and URLs; the errno phrase is what a human needs.
        match = re.search(r"\[Errno -?\d+\][^'\")\]\n]*", text)
        if match:
            return self.scrub(match.group(0).strip())
        if "timed out" in text.lower():
            return "connection timed out"
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return self.scrub(first)
