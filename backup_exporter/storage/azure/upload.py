"""A staged Azure upload: full blocks are staged by a thread pool while the dump runs, and one Put Block
List (with the metadata and the access tier) makes the blob visible at commit.

Staged but uncommitted blocks are invisible to listings and garbage-collected by Azure after 7 days, so an
aborted or crashed upload leaves nothing behind that a user could see.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import BlobBlock, BlobClient, ContentSettings, StandardBlobTier

from backup_exporter.core.errors import BackupError, StorageError
from backup_exporter.storage.azure.client import UPLOAD_RETRIES
from backup_exporter.storage.azure.errors import ErrorMapper
from backup_exporter.storage.base import ACCESS_TIERS
from backup_exporter.storage.blocks import block_id, block_size_for

log = logging.getLogger(__name__)

ARCHIVE_CONTENT_TYPE = "application/gzip"

# Azure metadata names must be valid C# identifiers; values travel as HTTP header values (ASCII).
_METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METADATA_VALUE = re.compile(r"^[\x20-\x7e]*$")


class _StagingPool:
    """Worker threads that stage blocks. Hand-written instead of ThreadPoolExecutor because its threads
    are joined at interpreter exit: an upload abandoned on a stalled storage (a run past its timeout)
    would keep `backupctl run-now` from exiting until every request in flight had timed out. These are
    daemon threads; abandoning them is safe because staged blocks are never visible."""

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[None], Callable[[], None]] | None] = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for worker in self._workers:
            worker.start()

    def submit(self, job: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        self._jobs.put((future, job))
        return future

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                job()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

    def shutdown(self, wait: bool) -> None:
        """Stop the workers once the jobs queued so far are done (or skipped); wait for them if `wait`."""
        for _ in self._workers:
            self._jobs.put(None)
        if wait:
            for worker in self._workers:
                worker.join()


def validate_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Return the metadata unchanged when Azure accepts it. Raises StorageError naming the bad entry."""
    for key, value in metadata.items():
        if not _METADATA_KEY.match(key):
            raise StorageError(f"metadata name {key!r} is not allowed by Azure (letters, digits, _ only)")
        if not isinstance(value, str) or not _METADATA_VALUE.match(value):
            raise StorageError(f"metadata value of {key!r} must be printable ASCII text")
    return dict(metadata)


def blob_tier(access_tier: str | None) -> StandardBlobTier | None:
    """Return the SDK tier for `access_tier` (Hot, Cool or Cold, any case), None for None.

    Raises StorageError for any other tier (nothing is committed then)."""
    if access_tier is None:
        return None
    tier = access_tier.strip().capitalize()
    if tier not in ACCESS_TIERS:
        raise StorageError(f"access tier {access_tier!r} is not one of {', '.join(ACCESS_TIERS)}")
    return StandardBlobTier(tier)


class AzureUpload:
    """A blob streamed into staged blocks; commit makes it visible with one Put Block List.

    Full blocks are staged by a thread pool; at most `max_concurrency` are in flight and write() blocks
    while they are, so memory stays near block size x (max_concurrency + 1) whatever the archive size.
    `lease_problem(name)` says why the lock of the blob's folder was lost (None while held or unlocked).
    """

    def __init__(self, blob: BlobClient, name: str, errors: ErrorMapper, lease_problem: Callable[[str], str | None],
                 block_size: int, block_cap: int, max_concurrency: int) -> None:
        self._blob = blob
        self._name = name
        self._errors = errors
        self._lease_problem = lease_problem
        self._base = block_size
        self._cap = max(block_cap, block_size)
        self._executor = _StagingPool(max_concurrency, "azure-stage")
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

        Raises StorageError when an earlier block failed to stage, the lock was lost or the upload is
        finished.
        """
        self._check_open()
        self._raise_if_failed()
        self._buffer += data
        while len(self._buffer) >= self._target:
            block = bytes(self._buffer[: self._target])
            # Deleting from the front of a bytearray is cheap in CPython (it moves a start offset).
            del self._buffer[: self._target]
            self._submit(block)

    def commit(self, metadata: dict[str, str], *, access_tier: str | None = None) -> None:
        """Stage the last partial block, wait for all blocks, then commit them with `metadata`, in the
        access tier `access_tier` when given (the same request: the blob is never rewritten to change tier).

        A commit of zero bytes creates an empty blob. Raises StorageError (or AuthenticationFailed) when
        the metadata or tier is invalid, any block failed, the lock was lost, or the commit fails; nothing
        is visible then.
        """
        self._check_open()
        try:
            meta = validate_metadata(metadata)
            tier = blob_tier(access_tier)
            if self._buffer:
                block = bytes(self._buffer)
                self._buffer = bytearray()
                self._submit(block)
            # Woken now and then, so that an abort from another thread (a run past its timeout) ends the wait.
            while wait_futures(self._futures, timeout=0.5).not_done:
                if self._stopping.is_set():
                    raise StorageError(f"upload of {self._name} was aborted")
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
                    standard_blob_tier=tier,
                    retry_total=UPLOAD_RETRIES,
                )
            except ResourceExistsError:
                if not self._committed_by_us(meta):
                    raise StorageError(f"Azure Blob {self._errors.where}: backup {self._name} already "
                                       f"exists; it is left as it was and this upload is not committed") from None
            except AzureError as exc:
                raise self._errors.error(exc, f"commit {self._name}") from None
        except BaseException:
            self._stop(wait=False)  # blocks still in flight are of no use now, and may be stuck
            raise
        self._stop()

    def abort(self) -> None:
        """Stop staging and never commit; never raises and never waits for blocks in flight, so it also
        ends, from another thread, a write or commit that waits on a storage that stopped answering.

        Staged blocks are never visible and Azure deletes them after 7 days.
        """
        try:
            if not self._finished:
                self._stop(wait=False)
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
            raise self._errors.error(error, f"upload block of {self._name}")

    def _raise_if_lock_lost(self) -> None:
        problem = self._lease_problem(self._name)
        if problem is not None:
            raise StorageError(f"Azure Blob {self._errors.where}: {problem} while uploading "
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
            self._futures.append(self._executor.submit(lambda: self._stage(index, block)))
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

    def _stop(self, wait: bool = True) -> None:
        self._finished = True
        self._stopping.set()
        self._buffer = bytearray()
        for future in self._futures:
            future.cancel()  # blocks not yet started are skipped
        self._executor.shutdown(wait=wait)
