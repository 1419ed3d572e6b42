"""Azure locks: a blob lease on a small lock blob, renewed by a daemon thread, so a dead holder's lock
expires by itself within a lease period; the holder's description is kept in the lock blob's metadata.

A lease is lost when the service refuses a renewal outright (HTTP 409/412: someone broke it or holds a
newer one), or when no renewal succeeded for a whole lease period (it may have expired and been taken).
Uploads into the locked folder then refuse to go on (see Leases.problem): the run no longer owns its plan.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, BlobProperties, ContainerClient

from backup_exporter.core.errors import BackupError, LockHeld
from backup_exporter.core.naming import lock_subject
from backup_exporter.storage.azure.client import RELEASE_RETRIES
from backup_exporter.storage.azure.errors import ErrorMapper, error_code, status_of

log = logging.getLogger(__name__)

HOLDER_KEY = "holder"
PERIOD_KEY = "lease_seconds"  # the holder's lease period, so a contender can say when a dead holder's lock frees
MAX_FINITE_LEASE = 60  # Azure's longest finite lease: the bound for a holder that did not record its period
JOIN_SECONDS = 5  # how long stopping a lock waits for a renewal in progress
# Percent-encode the holder so any text fits in an ASCII header; keep printable ASCII readable.
_HOLDER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class LeaseKeeper:
    """Renews a blob lease from a daemon thread until stopped, and remembers whether it was lost."""

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
                if status_of(exc) in (409, 412):
                    # Refused for good (broken, or leased by someone else): renewing again cannot help.
                    self._lost = f"the lease of {self._what} was lost ({error_code(exc) or status_of(exc)})"
                    log.error("lost the lease of %s: %s", self._what, error_code(exc) or status_of(exc))
                    return
                log.warning("could not renew the lease of %s: %s", self._what, error_code(exc) or type(exc).__name__)
            except Exception as exc:  # keep trying: the next renewal may still be in time
                log.warning("could not renew the lease of %s: %s", self._what, type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        # Never started when recording the holder failed; joining it then would raise RuntimeError, hide
        # the real error and skip releasing the lease. A renewal in progress against a storage that stopped
        # answering may take a whole request budget: it is not waited for (the thread is a daemon, and
        # renews nothing once stopped), so that a failing run ends within its documented bound.
        if self._thread.ident is not None:
            self._thread.join(timeout=JOIN_SECONDS)


class Leases:
    """The locks one AzureStorage holds on a container, by the folder each locks."""

    def __init__(self, container: ContainerClient, errors: ErrorMapper, lease_seconds: int,
                 renew_seconds: float) -> None:
        self._container = container
        self._errors = errors
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._keepers: dict[str, LeaseKeeper] = {}
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def hold(self, name: str, holder: str) -> Iterator[None]:
        """Hold a lease on the lock blob `name` for the with-block, renewing it from a daemon thread.

        The lock blob is created (empty) when missing and `holder` is recorded in its metadata. Raises
        LockHeld at entry when another lease is active, StorageError/AuthenticationFailed on failures.
        """
        blob = self._container.get_blob_client(name)
        lease = BlobLeaseClient(blob)
        try:
            try:
                lease.acquire(lease_duration=self.lease_seconds)
            except ResourceNotFoundError as exc:
                if error_code(exc) == "ContainerNotFound":
                    raise self._errors.missing_container() from None
                with contextlib.suppress(ResourceExistsError):  # another process created it first
                    blob.upload_blob(b"", overwrite=False)
                lease.acquire(lease_duration=self.lease_seconds)
        except HttpResponseError as exc:
            if status_of(exc) == 409:
                raise self._held(name) from None
            raise self._errors.error(exc, f"lock {name}") from None
        except BackupError:
            raise
        except Exception as exc:
            raise self._errors.error(exc, f"lock {name}") from None
        keeper = LeaseKeeper(lease, self.renew_seconds, name, self.lease_seconds)
        folder = posixpath.dirname(name)
        try:
            try:
                quoted = urllib.parse.quote(" ".join(holder.split()), safe=_HOLDER_SAFE)
                blob.set_blob_metadata({HOLDER_KEY: quoted, PERIOD_KEY: str(self.lease_seconds)}, lease=lease)
            except Exception as exc:
                raise self._errors.error(exc, f"lock {name}") from None
            keeper.start()
            with self._mutex:
                self._keepers[folder] = keeper
            yield
        finally:
            with self._mutex:
                if self._keepers.get(folder) is keeper:
                    del self._keepers[folder]
            keeper.stop()
            try:
                lease.release(retry_total=RELEASE_RETRIES)
            except Exception as exc:  # the lease expires by itself; do not mask the with-block's outcome
                log.warning("could not release the lease of %s: %s", name, type(exc).__name__)

    def problem(self, name: str) -> str | None:
        """Return why the lock held on the folder of object `name` was lost, or None.

        None also when this object holds no lock on that folder (nothing to lose).
        """
        with self._mutex:
            keeper = self._keepers.get(posixpath.dirname(name))
        return keeper.problem() if keeper is not None else None

    def holder(self, name: str) -> str | None:
        """Return the holder recorded on lock blob `name` while its lease is active, else None.

        Raises StorageError/AuthenticationFailed when the properties cannot be read.
        """
        props = self._lock_properties(name)
        if props is None:
            return None
        raw = (props.metadata or {}).get(HOLDER_KEY, "")
        return urllib.parse.unquote(raw) or "an unknown holder"

    def _lock_properties(self, name: str) -> BlobProperties | None:
        """Return the properties of lock blob `name` while its lease is active, else None."""
        try:
            props = self._container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._errors.missing_container() from None
            return None
        except Exception as exc:
            raise self._errors.error(exc, f"read lock {name}") from None
        state = getattr(props.lease, "state", None)
        return props if getattr(state, "value", state) == "leased" else None

    def _held(self, name: str) -> LockHeld:
        """Return the LockHeld for lock blob `name`: who holds it and, should that holder be dead (killed,
        its node lost: its lease then is never released), by when its lease expires at the latest."""
        try:
            props = self._lock_properties(name)
        except BackupError:
            props = None  # a lock we could not take, whose holder we could not read: still a held lock
        subject = lock_subject(name)
        if props is None:  # released between our attempt and this read
            return LockHeld(f"{subject} is locked by another run (its lease was released just now: try again)")
        metadata = props.metadata or {}
        holder = urllib.parse.unquote(metadata.get(HOLDER_KEY, "")) or "an unknown holder"
        duration = getattr(props.lease, "duration", None)
        if getattr(duration, "value", duration) == "infinite":
            return LockHeld(f"{subject} is locked by {holder} with an infinite lease, which never expires by "
                            "itself: break it (az storage blob lease break) once that holder is gone", holder=holder)
        try:
            period = int(metadata.get(PERIOD_KEY, MAX_FINITE_LEASE))
        except ValueError:
            period = MAX_FINITE_LEASE
        # A live holder renews its lease: the last renewal was at most now, so a dead one's expires by then.
        expires_by = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=min(period, MAX_FINITE_LEASE) + 1)
        return LockHeld(f"{subject} is locked by {holder}; if that run is gone (killed, or its node lost), "
                        f"its lease expires by {expires_by:%Y-%m-%dT%H:%M:%SZ} at the latest",
                        holder=holder, expires_by=expires_by)
