"""Backups in an Azure Blob Storage container (or Azurite).

An archive is a block blob built from staged blocks and made visible by one ``Put Block List`` at commit;
staged but uncommitted blocks are invisible to listings and garbage-collected by Azure after 7 days, so an
aborted or crashed upload leaves nothing behind that a user could see. Locks are blob leases on a small
lock blob, renewed by a daemon thread, so a dead holder's lock expires by itself within a lease period.

Error messages are one line and never contain the account key, SAS token or connection string.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobLeaseClient,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    ExponentialRetry,
)

from backup_exporter.core.errors import AuthenticationFailed, BackupError, ConfigError, LockHeld, StorageError
from backup_exporter.core.naming import lock_subject
from backup_exporter.core.redact import one_line
from backup_exporter.storage.base import ARCHIVE_SUFFIXES, BackupInfo
from backup_exporter.storage.blocks import DEFAULT_BASE, DEFAULT_CAP, block_id, block_size_for

log = logging.getLogger(__name__)

MiB = 1 << 20
DELETE_BATCH = 256  # Azure's limit of sub-requests per blob batch
ARCHIVE_CONTENT_TYPE = "application/gzip"
STATUS_CONTENT_TYPE = "application/json"
HOLDER_KEY = "holder"

# Fail fast on an unreachable endpoint: 3 attempts x 7 s connect timeout + ~7 s of backoff stays near 30 s
# (the SDK's defaults, 20 s timeouts and 15 s+ backoffs, take minutes).
CONNECT_TIMEOUT = 7
READ_TIMEOUT = 60
RETRIES = 2
# Staging and committing a backup retry longer (backoffs 2.5, 4.5, 8.5, 16.5, 32.5 s): a throttled or
# briefly failing service should not cost a dump that has already run for an hour.
UPLOAD_RETRIES = 5
_BACKOFF_INITIAL = 0.5
_BACKOFF_BASE = 2
_BACKOFF_JITTER = 1

# Azure metadata names must be valid C# identifiers; values travel as HTTP header values (ASCII).
_METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METADATA_VALUE = re.compile(r"^[\x20-\x7e]*$")
# Percent-encode the holder so any text fits in an ASCII header; keep printable ASCII readable.
_HOLDER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

# Error codes (or phrases) with which a service refuses the batch API itself; only then is deleting one
# by one a fallback rather than hiding a real failure.
_BATCH_UNSUPPORTED_CODES = {"NotImplemented", "FeatureNotSupported", "UnsupportedHttpVerb", "NotSupported"}
_BATCH_UNSUPPORTED_PHRASES = ("not supported", "not implemented", "unsupported")


def _error_code(exc: BaseException) -> str:
    """Return the service error code of an HTTP error ("BlobNotFound"), or "" when there is none."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # some codes are StorageErrorCode enum members
    return str(code) if code else ""


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def batch_unsupported(exc: BaseException) -> bool:
    """Return whether `exc` says the blob batch API is not supported (as some emulator versions do)."""
    if not isinstance(exc, HttpResponseError) or _status(exc) not in (400, 404, 405, 501):
        return False
    if _error_code(exc) in _BATCH_UNSUPPORTED_CODES:
        return True
    text = (getattr(exc, "reason", None) or "") + " " + str(getattr(exc, "message", "") or "")
    first_line = text.strip().splitlines()[0].lower() if text.strip() else ""
    return any(phrase in first_line for phrase in _BATCH_UNSUPPORTED_PHRASES)


def _validate_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Return the metadata unchanged when Azure accepts it. Raises StorageError naming the bad entry."""
    for key, value in metadata.items():
        if not _METADATA_KEY.match(key):
            raise StorageError(f"metadata name {key!r} is not allowed by Azure (letters, digits, _ only)")
        if not isinstance(value, str) or not _METADATA_VALUE.match(value):
            raise StorageError(f"metadata value of {key!r} must be printable ASCII text")
    return dict(metadata)


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.fromtimestamp(0, tz=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class AzureUpload:
    """An archive streamed into staged blocks; commit makes it visible with one Put Block List.

    Full blocks are staged by a thread pool; at most `max_concurrency` are in flight and write() blocks
    while they are, so memory stays near block size x (max_concurrency + 1) whatever the archive size.
    """

    def __init__(self, storage: AzureStorage, blob: BlobClient, name: str, block_size: int,
                 block_cap: int, max_concurrency: int) -> None:
        self._storage = storage
        self._blob = blob
        self._name = name
        self._base = block_size
        self._cap = max(block_cap, block_size)
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="azure-stage")
        self._concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._futures: list[Future[None]] = []
        self._buffer = bytearray()
        self._blocks = 0  # blocks handed to the pool so far
        self._target = block_size_for(0, self._base, self._cap)
        self._uploaded = 0
        self._mutex = threading.Lock()
        self._error: BaseException | None = None
        self._stopping = threading.Event()
        self._finished = False

    @property
    def bytes_uploaded(self) -> int:
        """Return the bytes in blocks that Azure has acknowledged as staged."""
        with self._mutex:
            return self._uploaded

    def write(self, data: bytes) -> None:
        """Buffer `data`, staging every full block; blocks while max_concurrency blocks are in flight.

        Raises StorageError when an earlier block failed to stage or the upload is finished.
        """
        self._check_open()
        self._raise_if_failed()
        self._buffer += data
        while len(self._buffer) >= self._target:
            block = bytes(self._buffer[: self._target])
            # Deleting from the front of a bytearray is cheap in CPython (it moves a start offset).
            del self._buffer[: self._target]
            self._submit(block)

    def commit(self, metadata: dict[str, str]) -> None:
        """Stage the last partial block, wait for all blocks, then commit them with `metadata`.

        A commit of zero bytes creates an empty blob. Raises StorageError (or AuthenticationFailed) when
        the metadata is invalid, any block failed, or the commit fails; nothing is visible then.
        """
        self._check_open()
        try:
            meta = _validate_metadata(metadata)
            if self._buffer:
                block = bytes(self._buffer)
                self._buffer = bytearray()
                self._submit(block)
            wait_futures(self._futures)
            self._raise_if_failed()
            self._raise_if_lock_lost()
            blocks = [BlobBlock(block_id=block_id(i)) for i in range(self._blocks)]
            try:
                # IfMissing: a backup that already has this name (a run started in the same second)
                # is never replaced.
                self._blob.commit_block_list(
                    blocks,
                    metadata=meta,
                    content_settings=ContentSettings(content_type=ARCHIVE_CONTENT_TYPE),
                    match_condition=MatchConditions.IfMissing,
                    retry_total=UPLOAD_RETRIES,
                )
            except ResourceExistsError:
                if not self._committed_by_us(meta):
                    raise StorageError(f"Azure Blob {self._storage.describe()}: backup {self._name} already "
                                       f"exists; it is left as it was and this upload is not committed") from None
            except AzureError as exc:
                raise self._storage.error(exc, f"commit {self._name}") from None
        except BaseException:
            self._stop()
            raise
        self._stop()

    def abort(self) -> None:
        """Stop staging, wait for blocks in flight, never commit; never raises.

        Staged blocks are never visible and Azure deletes them after 7 days.
        """
        try:
            if not self._finished:
                self._stop()
        except Exception:  # abort must not mask the failure that caused it
            log.debug("abort of %s failed", self._name, exc_info=True)

    # -- internals ----------------------------------------------------------------------------------------

    def _committed_by_us(self, meta: dict[str, str]) -> bool:
        """Return whether the existing blob is this very upload (a retried commit whose first attempt
        succeeded but whose answer was lost): same size and sha256 as ours."""
        try:
            props = self._blob.get_blob_properties()
        except AzureError:
            return False
        existing = props.metadata or {}
        return ("sha256" in meta and existing.get("sha256") == meta["sha256"]
                and existing.get("size") == meta.get("size") and int(props.size or 0) == self._uploaded)

    def _check_open(self) -> None:
        if self._finished:
            raise StorageError(f"upload of {self._name} is already finished")

    def _raise_if_failed(self) -> None:
        with self._mutex:
            error = self._error
        if error is not None:
            if isinstance(error, BackupError):
                raise error
            raise self._storage.error(error, f"upload block of {self._name}")

    def _raise_if_lock_lost(self) -> None:
        problem = self._storage.lease_problem(self._name)
        if problem is not None:
            raise StorageError(f"Azure Blob {self._storage.describe()}: {problem} while uploading "
                               f"{self._name}: another run may hold the plan, so this one is not committed")

    def _submit(self, block: bytes) -> None:
        self._raise_if_lock_lost()
        # Wait for a free slot; wake up now and then so an abort from another thread unblocks us.
        while not self._slots.acquire(timeout=0.5):
            if self._stopping.is_set():
                raise StorageError(f"upload of {self._name} was aborted")
        if self._stopping.is_set() or self._error is not None:
            self._slots.release()
            self._check_open()
            self._raise_if_failed()
            raise StorageError(f"upload of {self._name} was aborted")
        index = self._blocks
        self._blocks += 1
        self._target = block_size_for(self._blocks, self._base, self._cap)
        if len(self._futures) > 4 * self._concurrency:
            # Failures are recorded in self._error, so finished futures need not be kept (a 50,000-block
            # upload would otherwise hold 50,000 of them).
            self._futures = [f for f in self._futures if not f.done()]
        try:
            self._futures.append(self._executor.submit(self._stage, index, block))
        except BaseException:
            self._slots.release()
            raise

    def _stage(self, index: int, block: bytes) -> None:
        try:
            if self._stopping.is_set():
                return
            # The SDK base64-encodes the id once more; ids stay unique and of equal length.
            self._blob.stage_block(block_id(index), block, length=len(block), retry_total=UPLOAD_RETRIES)
            with self._mutex:
                self._uploaded += len(block)
        except BaseException as exc:
            with self._mutex:
                if self._error is None:
                    self._error = exc
        finally:
            self._slots.release()

    def _stop(self) -> None:
        self._finished = True
        self._stopping.set()
        self._buffer = bytearray()
        self._executor.shutdown(wait=True, cancel_futures=True)


class _LeaseKeeper:
    """Renews a blob lease from a daemon thread until stopped, and remembers whether it was lost.

    A lease is lost when the service refuses a renewal outright (HTTP 409/412: someone broke it or holds
    a newer one), or when no renewal succeeded for a whole lease period (it may have expired and been
    taken). Uploads into the locked folder then refuse to go on (see AzureStorage.lease_problem): the run
    no longer owns its plan, so another run may be dumping the same plan at the same time.
    """

    def __init__(self, lease: BlobLeaseClient, interval: float, what: str, lease_seconds: int) -> None:
        self._lease = lease
        self._interval = interval
        self._what = what
        self._lease_seconds = lease_seconds
        self._last_renewed = time.monotonic()  # the lease was just acquired
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def problem(self) -> str | None:
        """Return why the lease can no longer be trusted, or None while it is held."""
        if self._lost is not None:
            return self._lost
        silent = time.monotonic() - self._last_renewed
        if self._lease_seconds > 0 and silent > self._lease_seconds:
            return f"the lease of {self._what} was not renewed for {silent:.0f} s and may have expired"
        return None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lease.renew()
                self._last_renewed = time.monotonic()
            except HttpResponseError as exc:
                if _status(exc) in (409, 412):
                    # Refused for good (broken, or leased by someone else): renewing again cannot help.
                    self._lost = f"the lease of {self._what} was lost ({_error_code(exc) or _status(exc)})"
                    log.error("lost the lease of %s: %s", self._what, _error_code(exc) or _status(exc))
                    return
                log.warning("could not renew the lease of %s: %s", self._what, _error_code(exc) or type(exc).__name__)
            except Exception as exc:  # keep trying: the next renewal may still be in time
                log.warning("could not renew the lease of %s: %s", self._what, type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        # Never started when recording the holder failed; joining it then would raise RuntimeError, hide
        # the real error and skip releasing the lease. A renewal in progress ends within the client
        # timeouts; the thread is a daemon anyway.
        if self._thread.ident is not None:
            self._thread.join(timeout=30)


class AzureStorage:
    """The Storage contract on one Azure Blob Storage container.

    Credentials, in order: `connection_string`; else `account_url` with `sas_token` or `credential`; else
    `account_url` with azure.identity's DefaultAzureCredential (workload identity, managed identity...).
    `lease_seconds` (15-60) and `renew_seconds` tune locks; the defaults suit production.
    """

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        sas_token: str | None = None,
        credential: object | None = None,
        block_size: int = DEFAULT_BASE,
        block_cap: int = DEFAULT_CAP,
        max_concurrency: int = 4,
        create_container: bool = False,
        lease_seconds: int = 60,
        renew_seconds: float = 20.0,
    ) -> None:
        if not container:
            raise ConfigError(["Azure storage needs a container name"])
        if block_size <= 0 or max_concurrency <= 0:
            raise ConfigError(["Azure block size and concurrency must be positive"])
        if not (lease_seconds == -1 or 15 <= lease_seconds <= 60):
            raise ConfigError(["Azure lease duration must be 15 to 60 seconds"])
        self.container_name = container
        self.block_size = block_size
        self.block_cap = block_cap
        self.max_concurrency = max_concurrency
        self.create_container = create_container
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._secrets: list[str] = [s for s in (connection_string, sas_token) if s]
        # The leases this object holds, by the folder they lock; uploads into a folder whose lease was
        # lost must not commit.
        self._keepers: dict[str, _LeaseKeeper] = {}
        self._keepers_mutex = threading.Lock()
        self._owned_credential: Any = None
        options: dict[str, Any] = {
            "retry_policy": ExponentialRetry(
                initial_backoff=_BACKOFF_INITIAL,  # type: ignore[arg-type]  # annotated int, floats work
                increment_base=_BACKOFF_BASE,
                retry_total=RETRIES,
                random_jitter_range=_BACKOFF_JITTER,
            ),
            "connection_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            # Download in block-sized pieces rather than the 32 MiB first request.
            "max_single_get_size": 4 * MiB,
            "max_chunk_get_size": 4 * MiB,
        }
        try:
            if connection_string:
                for part in connection_string.split(";"):
                    key, _, value = part.partition("=")
                    if key.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
                        self._secrets.append(value.strip())
                self._service = BlobServiceClient.from_connection_string(connection_string, **options)
            elif account_url:
                cred: Any = sas_token or credential
                if cred is None:
                    # Imported lazily: azure.identity is slow to import and only this path needs it.
                    from azure.identity import DefaultAzureCredential

                    cred = self._owned_credential = DefaultAzureCredential()
                self._service = BlobServiceClient(account_url, credential=cred, **options)
            else:
                raise ConfigError(["Azure storage needs a connection string or an account URL"])
        except BackupError:
            raise
        except (ValueError, AzureError) as exc:
            # The parser's message may quote the connection string: say only what kind of input is bad.
            what = "connection string" if connection_string else "account URL"
            raise ConfigError([f"invalid Azure storage {what} ({type(exc).__name__})"]) from None
        self._container: ContainerClient = self._service.get_container_client(container)
        parsed = urllib.parse.urlsplit(self._service.url)
        self.host = parsed.hostname or "unknown host"
        if parsed.port:
            self.host = f"{self.host}:{parsed.port}"
        self.account = self._service.account_name or self.host

    # -- errors -------------------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """Return `text` on one line without secrets (keys, SAS tokens, URL query strings), shortened."""
        # Query strings of storage URLs carry SAS tokens in many shapes: drop them whole.
        text = re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\"]*", r"\1", text)
        return one_line(text, self._secrets, limit=300)

    def error(self, exc: BaseException, what: str) -> BackupError:
        """Return the one-line, secret-free BackupError for `exc` met while doing `what`."""
        if isinstance(exc, BackupError):
            return exc
        where = f"azure://{self.account}/{self.container_name}"
        if isinstance(exc, ClientAuthenticationError) or _status(exc) == 403:
            detail = _error_code(exc) or type(exc).__name__
            return AuthenticationFailed(f"Azure Blob {where}: authentication failed ({detail}) during {what}")
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return StorageError(f"Azure Blob endpoint {self.host} is unreachable: {self._reason(exc)}")
        if isinstance(exc, HttpResponseError):
            code = _error_code(exc) or (exc.reason or "error")
            if code == "ContainerNotFound":
                return self._missing_container()
            return StorageError(f"Azure Blob {where}: {what} failed: {code} (HTTP {_status(exc)})")
        return StorageError(f"Azure Blob {where}: {what} failed: {self._reason(exc)}")

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

    def _missing_container(self) -> StorageError:
        return StorageError(f"container '{self.container_name}' does not exist in {self.account}")

    # -- Storage ------------------------------------------------------------------------------------------

    def describe(self) -> str:
        """Return e.g. 'azure://account/container' (never a secret)."""
        return f"azure://{self.account}/{self.container_name}"

    def ping(self) -> None:
        """Check the container exists and credentials work, creating it when `create_container` is set.

        Raises StorageError (missing container, unreachable endpoint) or AuthenticationFailed.
        """
        try:
            self._container.get_container_properties()
            return
        except ResourceNotFoundError as exc:
            if not self.create_container:
                if _error_code(exc) in ("", "ContainerNotFound"):
                    raise self._missing_container() from None
                raise self.error(exc, "check container") from None
        except Exception as exc:  # azure.identity errors are not AzureErrors
            raise self._auth_or_error(exc, "check container") from None
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass  # created by someone else meanwhile
        except Exception as exc:
            raise self._auth_or_error(exc, "create container") from None

    def _auth_or_error(self, exc: BaseException, what: str) -> BackupError:
        # DefaultAzureCredential raises its own ClientAuthenticationError subclasses when no identity works.
        if type(exc).__name__ == "CredentialUnavailableError":
            return AuthenticationFailed(f"Azure Blob {self.describe()}: no usable Azure credential found")
        return self.error(exc, what)

    def start_upload(self, name: str) -> AzureUpload:
        """Begin streaming the block blob `name`; nothing is visible until commit."""
        blob = self._container.get_blob_client(name)
        return AzureUpload(self, blob, name, self.block_size, self.block_cap, self.max_concurrency)

    def list_backups(self, prefix: str) -> list[BackupInfo]:
        """Return committed archives directly under `prefix/` (not deeper), oldest first.

        Raises StorageError (or AuthenticationFailed) when any page of the listing fails.
        """
        base = prefix.strip("/")
        starts = f"{base}/" if base else None
        found: list[BackupInfo] = []
        try:
            for blob in self._container.list_blobs(name_starts_with=starts, include=["metadata"]):
                rest = blob.name[len(starts or "") :]
                if "/" in rest or not rest.endswith(ARCHIVE_SUFFIXES):
                    continue
                found.append(
                    BackupInfo(
                        name=blob.name,
                        size=int(blob.size or 0),
                        last_modified=_utc(blob.last_modified),
                        metadata=dict(blob.metadata or {}),
                    )
                )
        except Exception as exc:
            raise self._auth_or_error(exc, f"list {starts or '/'}") from None
        found.sort(key=lambda b: (b.last_modified, b.name))
        return found

    def read_backup(self, name: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        """Return an iterator over the blob's bytes, in chunks of at most `chunk_size` (4 MiB at most).

        Raises StorageError at once when the blob is missing, and from the iterator on a failed read
        (including the blob changing while it is read).
        """
        try:
            downloader = self._container.get_blob_client(name).download_blob()
        except ResourceNotFoundError:
            raise StorageError(f"Azure Blob {self.describe()}: backup {name} does not exist") from None
        except Exception as exc:
            raise self._auth_or_error(exc, f"read {name}") from None
        return self._chunks(downloader.chunks(), name, max(1, chunk_size))

    def _chunks(self, chunks: Iterator[bytes], name: str, chunk_size: int) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                for start in range(0, len(chunk), chunk_size):
                    yield chunk if len(chunk) <= chunk_size else chunk[start : start + chunk_size]
        except (AzureError, OSError) as exc:
            raise self.error(exc, f"read {name}") from None

    def backup_info(self, name: str) -> BackupInfo:
        """Return size, last-modified time and metadata of blob `name`. Raises StorageError when missing."""
        try:
            props = self._container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            raise StorageError(f"Azure Blob {self.describe()}: backup {name} does not exist") from None
        except Exception as exc:
            raise self._auth_or_error(exc, f"read properties of {name}") from None
        return BackupInfo(name=name, size=int(props.size or 0), last_modified=_utc(props.last_modified),
                          metadata=dict(props.metadata or {}))

    def delete_backups(self, names: Sequence[str]) -> None:
        """Delete these blobs in batches of 256; already missing blobs are fine.

        Falls back to deleting one by one only when the service says it does not support batches.
        Raises StorageError naming how many deletions failed.
        """
        names = list(names)
        for start in range(0, len(names), DELETE_BATCH):
            batch = names[start : start + DELETE_BATCH]
            try:
                responses = list(self._container.delete_blobs(*batch, raise_on_any_failure=False))
            except Exception as exc:
                if batch_unsupported(exc):
                    self._delete_one_by_one(names[start:])
                    return
                raise self._auth_or_error(exc, f"delete {len(batch)} blobs") from None
            failed = [(n, r.status_code) for n, r in zip(batch, responses, strict=False)
                      if not (200 <= r.status_code < 300 or r.status_code == 404)]
            if failed:
                first_name, status = failed[0]
                raise StorageError(f"Azure Blob {self.describe()}: could not delete {len(failed)} of "
                                   f"{len(batch)} blobs (first: {first_name}, HTTP {status})")

    def _delete_one_by_one(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                self._container.delete_blob(name)
            except ResourceNotFoundError:
                pass
            except Exception as exc:
                raise self._auth_or_error(exc, f"delete {name}") from None

    def read_status(self, name: str) -> bytes | None:
        """Return the status blob `name`, or None when it does not exist. Raises StorageError."""
        try:
            return self._container.get_blob_client(name).download_blob().readall()
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise self._missing_container() from None
            return None
        except Exception as exc:
            raise self._auth_or_error(exc, f"read {name}") from None

    def write_status(self, name: str, data: bytes) -> None:
        """Replace the status blob `name` with one Put Blob (atomic for readers). Raises StorageError."""
        try:
            self._container.get_blob_client(name).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=STATUS_CONTENT_TYPE))
        except Exception as exc:
            raise self._auth_or_error(exc, f"write {name}") from None

    @contextlib.contextmanager
    def lock(self, name: str, holder: str) -> Iterator[None]:
        """Hold a lease on the lock blob `name` for the with-block, renewing it from a daemon thread.

        The lock blob is created (empty) when missing and `holder` is recorded in its metadata. Raises
        LockHeld at entry when another lease is active, StorageError/AuthenticationFailed on failures. If
        this process dies the lease expires within `lease_seconds`.
        """
        blob = self._container.get_blob_client(name)
        lease = BlobLeaseClient(blob)
        try:
            try:
                lease.acquire(lease_duration=self.lease_seconds)
            except ResourceNotFoundError as exc:
                if _error_code(exc) == "ContainerNotFound":
                    raise self._missing_container() from None
                with contextlib.suppress(ResourceExistsError):  # another process created it first
                    blob.upload_blob(b"", overwrite=False)
                lease.acquire(lease_duration=self.lease_seconds)
        except HttpResponseError as exc:
            if _status(exc) == 409:
                current = self.lock_holder(name) or "an unknown holder"
                raise LockHeld(f"{lock_subject(name)} is locked by {current}") from None
            raise self.error(exc, f"lock {name}") from None
        except BackupError:
            raise
        except Exception as exc:
            raise self._auth_or_error(exc, f"lock {name}") from None
        keeper = _LeaseKeeper(lease, self.renew_seconds, name, self.lease_seconds)
        folder = posixpath.dirname(name)
        try:
            try:
                quoted = urllib.parse.quote(" ".join(holder.split()), safe=_HOLDER_SAFE)
                blob.set_blob_metadata({HOLDER_KEY: quoted}, lease=lease)
            except Exception as exc:
                raise self._auth_or_error(exc, f"lock {name}") from None
            keeper.start()
            with self._keepers_mutex:
                self._keepers[folder] = keeper
            yield
        finally:
            with self._keepers_mutex:
                if self._keepers.get(folder) is keeper:
                    del self._keepers[folder]
            keeper.stop()
            try:
                lease.release()
            except Exception as exc:  # the lease expires by itself; do not mask the with-block's outcome
                log.warning("could not release the lease of %s: %s", name, type(exc).__name__)

    def lease_problem(self, name: str) -> str | None:
        """Return why the lock held on the folder of object `name` was lost, or None.

        None also when this object holds no lock on that folder (nothing to lose).
        """
        with self._keepers_mutex:
            keeper = self._keepers.get(posixpath.dirname(name))
        return keeper.problem() if keeper is not None else None

    def lock_holder(self, name: str) -> str | None:
        """Return the holder recorded on lock blob `name` while its lease is active, else None.

        Raises StorageError/AuthenticationFailed when the properties cannot be read.
        """
        try:
            props = self._container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise self._missing_container() from None
            return None
        except Exception as exc:
            raise self._auth_or_error(exc, f"read lock {name}") from None
        state = getattr(props.lease, "state", None)
        if getattr(state, "value", state) != "leased":
            return None
        raw = (props.metadata or {}).get(HOLDER_KEY, "")
        return urllib.parse.unquote(raw) or "an unknown holder"

    def close(self) -> None:
        """Close the HTTP connections and the credential this object created."""
        with contextlib.suppress(Exception):
            self._service.close()
        if self._owned_credential is not None:
            with contextlib.suppress(Exception):
                self._owned_credential.close()
