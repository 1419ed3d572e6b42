"""The storage contract on one Azure Blob Storage container (or Azurite): the blob operations.

Uploads are staged block blobs (upload.py), locks are renewed blob leases (lease.py), the client and its
retry policy are built in client.py, and every SDK exception becomes one secret-free line in errors.py.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from backup_exporter.core.errors import ConfigError, StorageError
from backup_exporter.storage.azure.client import CONNECT_TIMEOUT, READ_TIMEOUT, connect
from backup_exporter.storage.azure.errors import ErrorMapper, batch_unsupported, error_code, refused_deletion
from backup_exporter.storage.azure.lease import Leases
from backup_exporter.storage.azure.upload import AzureUpload
from backup_exporter.storage.base import READ_CHUNK, ObjectInfo, folder_of
from backup_exporter.storage.blocks import DEFAULT_BASE, DEFAULT_CAP

DELETE_BATCH = 256  # Azure's limit of sub-requests per blob batch
STATUS_CONTENT_TYPE = "application/json"


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.fromtimestamp(0, tz=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class AzureStorage:
    """The Storage contract on one Azure Blob Storage container.

    Credentials, in order: `connection_string`; else `account_url` with `sas_token` or `credential`; else
    `account_url` with azure.identity's DefaultAzureCredential (workload identity, managed identity...).
    `lease_seconds` (15-60) and `renew_seconds` tune locks, `connect_timeout` and `read_timeout` (seconds)
    bound each attempt of a request (client.py); the defaults suit production.
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
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
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
        self._connection = connect(container, connection_string=connection_string, account_url=account_url,
                                   sas_token=sas_token, credential=credential, connect_timeout=connect_timeout,
                                   read_timeout=read_timeout)
        self._container = self._connection.container
        self.host = self._connection.host
        self.account = self._connection.account
        self.errors = ErrorMapper(self.account, container, self.host, self._connection.secrets)
        self._leases = Leases(self._container, self.errors, lease_seconds, renew_seconds)

    def describe(self) -> str:
        """Return e.g. 'azure://account/container' (never a secret)."""
        return self.errors.where

    def server_time(self) -> datetime | None:
        """Return the time in the service's answer to a container request (its HTTP Date header), or None
        when the answer has none. Raises StorageError or AuthenticationFailed."""
        dates: list[str] = []

        def keep_date(response: Any) -> None:
            dates.append(response.http_response.headers.get("Date", ""))

        try:
            self._container.get_container_properties(raw_response_hook=keep_date)
        except Exception as exc:  # azure.identity errors are not AzureErrors
            raise self.errors.error(exc, "read the service's time") from None
        try:
            return email.utils.parsedate_to_datetime(dates[-1]).astimezone(UTC) if dates and dates[-1] else None
        except (TypeError, ValueError):
            return None

    def ping(self) -> None:
        """Check the container exists and credentials work, creating it when `create_container` is set.

        Raises StorageError (missing container, unreachable endpoint) or AuthenticationFailed.
        """
        try:
            self._container.get_container_properties()
            return
        except ResourceNotFoundError as exc:
            if not self.create_container:
                if error_code(exc) in ("", "ContainerNotFound"):
                    raise self.errors.missing_container() from None
                raise self.errors.error(exc, "check container") from None
        except Exception as exc:  # azure.identity errors are not AzureErrors
            raise self.errors.error(exc, "check container") from None
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass  # created by someone else meanwhile
        except Exception as exc:
            raise self.errors.error(exc, "create container") from None

    def start_upload(self, name: str) -> AzureUpload:
        """Begin streaming the block blob `name`; nothing is visible until commit."""
        blob = self._container.get_blob_client(name)
        return AzureUpload(blob, name, self.errors, self._leases.problem, self.block_size, self.block_cap,
                           self.max_concurrency)

    def put(self, name: str, data: bytes) -> None:
        """Replace the small blob `name` with one Put Blob (atomic for readers). Raises StorageError."""
        try:
            self._container.get_blob_client(name).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=STATUS_CONTENT_TYPE))
        except Exception as exc:
            raise self.errors.error(exc, f"write {name}") from None

    def get(self, name: str) -> bytes | None:
        """Return the blob `name`, or None when it does not exist. Raises StorageError."""
        try:
            return self._container.get_blob_client(name).download_blob().readall()
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self.errors.missing_container() from None
            return None
        except Exception as exc:
            raise self.errors.error(exc, f"read {name}") from None

    def read(self, name: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """Return an iterator over the blob's bytes, in chunks of at most `chunk_size` (4 MiB at most).

        Raises StorageError at once when the blob is missing, and from the iterator on a failed read
        (including the blob changing while it is read).
        """
        try:
            downloader = self._container.get_blob_client(name).download_blob()
        except ResourceNotFoundError:
            raise StorageError(f"Azure Blob {self.describe()}: backup {name} does not exist") from None
        except Exception as exc:
            raise self.errors.error(exc, f"read {name}") from None
        return self._chunks(downloader.chunks(), name, max(1, chunk_size))

    def _chunks(self, chunks: Iterator[bytes], name: str, chunk_size: int) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                for start in range(0, len(chunk), chunk_size):
                    yield chunk if len(chunk) <= chunk_size else chunk[start : start + chunk_size]
        except (AzureError, OSError) as exc:
            raise self.errors.error(exc, f"read {name}") from None

    def stat(self, name: str) -> ObjectInfo:
        """Return size, last-modified time and metadata of blob `name`. Raises StorageError when missing."""
        try:
            props = self._container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            raise StorageError(f"Azure Blob {self.describe()}: backup {name} does not exist") from None
        except Exception as exc:
            raise self.errors.error(exc, f"read properties of {name}") from None
        return ObjectInfo(name=name, size=int(props.size or 0), last_modified=_utc(props.last_modified),
                          metadata=dict(props.metadata or {}))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Return every committed blob under the folder `prefix`, at any depth, sorted by name.

        Raises StorageError (or AuthenticationFailed) when any page of the listing fails.
        """
        folder = folder_of(prefix)
        found: list[ObjectInfo] = []
        try:
            for blob in self._container.list_blobs(name_starts_with=folder or None, include=["metadata"]):
                found.append(ObjectInfo(name=blob.name, size=int(blob.size or 0),
                                        last_modified=_utc(blob.last_modified),
                                        metadata=dict(blob.metadata or {})))
        except Exception as exc:
            raise self.errors.error(exc, f"list {folder or '/'}") from None
        found.sort(key=lambda o: o.name)
        return found

    def delete(self, names: Sequence[str]) -> None:
        """Delete these blobs in batches of 256; already missing blobs are fine.

        Falls back to deleting one by one only when the service says it does not support batches.
        Raises StorageError naming how many deletions failed and why the first one did (an immutability
        policy or legal hold, say).
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
                raise self.errors.error(exc, f"delete {len(batch)} blobs") from None
            failed = [(n, r) for n, r in zip(batch, responses, strict=False)
                      if not (200 <= r.status_code < 300 or r.status_code == 404)]
            if failed:
                first_name, response = failed[0]
                code = str(response.headers.get("x-ms-error-code") or "")
                detail = f"HTTP {response.status_code}{' ' + code if code else ''}"
                raise StorageError(f"Azure Blob {self.describe()}: could not delete {len(failed)} of "
                                   f"{len(batch)} blobs (first: {first_name}, {detail}){refused_deletion(code)}")

    def _delete_one_by_one(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                self._container.delete_blob(name)
            except ResourceNotFoundError:
                pass
            except Exception as exc:
                failure = self.errors.error(exc, f"delete {name}")
                if isinstance(failure, StorageError) and refused_deletion(error_code(exc)):
                    raise StorageError(failure.message + refused_deletion(error_code(exc))) from None
                raise failure from None

    def lock(self, name: str, holder: str) -> contextlib.AbstractContextManager[None]:
        """Hold a lease on the lock blob `name` for the with-block (see lease.py).

        Raises LockHeld at entry when another lease is active, StorageError/AuthenticationFailed on
        failures. If this process dies the lease expires within `lease_seconds`.
        """
        return self._leases.hold(name, holder)

    def lock_holder(self, name: str) -> str | None:
        """Return the holder recorded on lock blob `name` while its lease is active, else None."""
        return self._leases.holder(name)

    def lease_problem(self, name: str) -> str | None:
        """Return why the lock held on the folder of object `name` was lost, or None."""
        return self._leases.problem(name)

    def close(self) -> None:
        """Close the HTTP connections and the credential this object created."""
        with contextlib.suppress(Exception):
            self._connection.service.close()
        if self._connection.owned_credential is not None:
            with contextlib.suppress(Exception):
                self._connection.owned_credential.close()
