"""AzureStorage specifics against a real Azurite: bounded memory, access tiers, leases, errors. The contract
every backend keeps is in test_storage_contract.py."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psutil  # type: ignore[import-untyped]
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import (
    BlobLeaseClient,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_container_sas,
)

from backup_exporter.core.errors import AuthenticationFailed, ConfigError, ExitCode, LockHeld, StorageError
from backup_exporter.repository.backups import archives
from backup_exporter.storage.azure import AzureStorage, batch_unsupported
from backup_exporter.storage.azure.client import RELEASE_RETRIES, RETRIES, UPLOAD_RETRIES, worst_case_seconds
from backup_exporter.storage.azure.lease import JOIN_SECONDS
from tests import servers
from tests.test_storage_contract import LOCK, PREFIX, STATUS, archive, commit, payload

MiB = 1 << 20


@pytest.fixture
def service(azure_connection_string: str) -> Iterator[BlobServiceClient]:
    client = BlobServiceClient.from_connection_string(azure_connection_string)
    yield client
    client.close()


def blob_names(service: BlobServiceClient, container: str) -> list[str]:
    return sorted(b.name for b in service.get_container_client(container).list_blobs())


@pytest.fixture
def azure(container: str, azure_connection_string: str) -> Iterator[AzureStorage]:
    store = AzureStorage(container, connection_string=azure_connection_string)
    yield store
    store.close()


def test_a_large_upload_keeps_memory_bounded_and_commits_the_right_bytes(
        container: str, azure_connection_string: str) -> None:
    total_chunks = 400  # 400 MiB in 1 MiB writes, 4 MiB blocks, 4 in flight
    store = AzureStorage(container, connection_string=azure_connection_string, block_size=4 * MiB,
                         max_concurrency=4)
    name = archive("2026-11-27T13-00-00Z")
    try:
        commit(store, archive("2000-01-01T00-00-00Z"), payload(5 * MiB))  # warm up imports and pools
        process = psutil.Process()
        baseline = process.memory_info().rss
        peak = baseline
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        digest = hashlib.sha256()
        started = time.monotonic()
        try:
            upload = store.start_upload(name)
            for _ in range(total_chunks):
                chunk = os.urandom(MiB)
                digest.update(chunk)
                upload.write(chunk)
            upload.commit({"sha256": digest.hexdigest(), "size": str(total_chunks * MiB)})
        finally:
            stop.set()
            sampler.join()
        elapsed = time.monotonic() - started
        growth = peak - baseline
        assert growth < 120 * MiB, f"RSS grew by {growth / MiB:.0f} MiB"
        assert upload.bytes_uploaded == total_chunks * MiB

        info = store.stat(name)
        assert info.size == total_chunks * MiB
        assert info.metadata["sha256"] == digest.hexdigest()
        check = hashlib.sha256()
        for chunk in store.read(name):
            check.update(chunk)
        assert check.hexdigest() == digest.hexdigest()
        print(f"uploaded {total_chunks} MiB in {elapsed:.1f} s, RSS growth {growth / MiB:.1f} MiB")
    finally:
        store.close()


def test_a_committed_blob_has_the_gzip_content_type(azure: AzureStorage, service: BlobServiceClient,
                                                   container: str) -> None:
    commit(azure, archive("2026-11-27T13-00-00Z"), b"gz")
    props = service.get_blob_client(container, archive("2026-11-27T13-00-00Z")).get_blob_properties()
    assert props.content_settings.content_type == "application/gzip"


@pytest.mark.parametrize("tier", ["Hot", "Cool", "Cold", "cool"])
def test_the_access_tier_is_set_by_the_commit_itself(azure: AzureStorage, service: BlobServiceClient,
                                                     container: str, tier: str) -> None:
    name = archive("2026-11-27T13-00-00Z")
    commit(azure, name, payload(150_000), access_tier=tier)
    props = service.get_blob_client(container, name).get_blob_properties()
    assert props.blob_tier == tier.capitalize()
    assert not props.blob_tier_inferred  # set explicitly, not the account default
    # Set by the Put Block List: a later Set Blob Tier would have recorded a tier change time.
    assert props.blob_tier_change_time is None


def test_without_an_access_tier_the_blob_gets_the_account_default(
        azure: AzureStorage, service: BlobServiceClient, container: str) -> None:
    commit(azure, archive("2026-11-27T13-00-00Z"), b"x")
    props = service.get_blob_client(container, archive("2026-11-27T13-00-00Z")).get_blob_properties()
    assert props.blob_tier_inferred


def test_an_unknown_access_tier_fails_the_commit_and_leaves_nothing(
        azure: AzureStorage, service: BlobServiceClient, container: str) -> None:
    upload = azure.start_upload(archive("2026-11-27T13-00-00Z"))
    upload.write(payload(100_000))
    with pytest.raises(StorageError, match="access tier 'Archive' is not one of Hot, Cool, Cold"):
        upload.commit({}, access_tier="Archive")
    assert blob_names(service, container) == []


def test_a_blob_the_service_refuses_to_delete_fails_loudly_and_stays(
        azure: AzureStorage, service: BlobServiceClient, container: str) -> None:
    # Azurite has no immutability policies; a leased blob is refused the same way (per-blob, inside the
    # batch), which is what retention on a WORM container meets.
    kept, free = archive("2026-11-27T13-00-00Z"), archive("2026-11-27T14-00-00Z")
    commit(azure, kept, b"held")
    commit(azure, free, b"free")
    BlobLeaseClient(service.get_blob_client(container, kept)).acquire(lease_duration=-1)
    with pytest.raises(StorageError) as excinfo:
        azure.delete([kept, free])
    message = str(excinfo.value)
    assert message.startswith(f"Azure Blob azure://devstoreaccount1/{container}: could not delete 1 of 2 blobs "
                              f"(first: {kept}, HTTP 412 LeaseIdMissing)")
    assert excinfo.value.exit_code == ExitCode.STORAGE
    assert blob_names(service, container) == [kept]


def test_an_aborted_upload_leaves_no_blob_even_uncommitted_ones_are_invisible(
        azure: AzureStorage, service: BlobServiceClient, container: str) -> None:
    upload = azure.start_upload(archive("2026-11-27T13-00-00Z"))
    upload.write(payload(9 * MiB))  # two full blocks staged
    upload.abort()
    assert blob_names(service, container) == []


def test_metadata_names_azure_refuses_fail_the_commit_and_leave_nothing(
        azure: AzureStorage, service: BlobServiceClient, container: str) -> None:
    upload = azure.start_upload(archive("2026-11-27T13-00-00Z"))
    upload.write(b"data")
    with pytest.raises(StorageError, match="metadata name 'content-type'"):
        upload.commit({"content-type": "x"})
    assert blob_names(service, container) == []


def test_a_block_that_fails_to_stage_fails_the_upload(
        azure_connection_string: str, service: BlobServiceClient) -> None:
    name = f"t-{uuid.uuid4().hex[:20]}"
    service.create_container(name)
    store = AzureStorage(name, connection_string=azure_connection_string, block_size=64 * 1024)
    try:
        upload = store.start_upload(archive("2026-11-27T13-00-00Z"))
        upload.write(payload(200_000))
        service.delete_container(name)  # every later block is refused by the service
        with pytest.raises(StorageError) as excinfo:
            for _ in range(50):
                upload.write(payload(100_000))
            upload.commit({})
        assert excinfo.value.exit_code == ExitCode.STORAGE
        assert "\n" not in str(excinfo.value)
        upload.abort()
    finally:
        store.close()


def test_ping_names_a_missing_container_and_creates_it_when_asked(
        azure_connection_string: str, service: BlobServiceClient) -> None:
    name = f"t-{uuid.uuid4().hex[:20]}"
    store = AzureStorage(name, connection_string=azure_connection_string)
    with pytest.raises(StorageError) as excinfo:
        store.ping()
    assert str(excinfo.value) == f"container '{name}' does not exist in devstoreaccount1"
    with pytest.raises(StorageError, match="does not exist"):
        store.list_objects(PREFIX)
    creating = AzureStorage(name, connection_string=azure_connection_string, create_container=True)
    try:
        creating.ping()
        store.ping()
        creating.ping()  # already there: fine
    finally:
        service.delete_container(name)
        store.close()
        creating.close()


def test_ping_succeeds_and_describe_names_account_and_container_only(
        azure: AzureStorage, container: str) -> None:
    azure.ping()
    assert azure.describe() == f"azure://devstoreaccount1/{container}"


def test_an_unreachable_endpoint_fails_ping_quickly_without_the_key(container: str) -> None:
    port = servers.free_port()
    store = AzureStorage(container, connection_string=servers.azurite_connection_string(port))
    started = time.monotonic()
    try:
        with pytest.raises(StorageError) as excinfo:
            store.ping()
    finally:
        store.close()
    elapsed = time.monotonic() - started
    message = str(excinfo.value)
    assert elapsed < 30
    assert message.startswith(f"Azure Blob endpoint 127.0.0.1:{port} is unreachable: ")
    assert "Connection refused" in message
    assert servers.AZURITE_KEY not in message and "AccountKey" not in message
    assert "\n" not in message
    assert excinfo.value.exit_code == ExitCode.STORAGE


@pytest.fixture
def silent_endpoint() -> Iterator[int]:
    """A loopback port that accepts connections and then never answers: a storage that stopped answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read from or written to

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]


def test_a_storage_that_stops_answering_fails_a_small_request_within_its_bound_logging_the_retry(
        silent_endpoint: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backup_exporter.storage.azure.client")
    store = AzureStorage("c", connection_string=servers.azurite_connection_string(silent_endpoint), read_timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(StorageError, match="is unreachable: connection timed out") as excinfo:
            store.ping()
    finally:
        store.close()
    elapsed = time.monotonic() - started
    assert 2 <= elapsed <= worst_case_seconds(RETRIES, read_timeout=1) + 2
    assert excinfo.value.exit_code == ExitCode.STORAGE
    (line,) = retry_lines(caplog)
    assert line.startswith("Azure Blob GET /devstoreaccount1/c: timed out; retry 1 of 1 in ")
    assert "sig=" not in line and "restype" not in line  # no query string


def test_a_stalled_upload_fails_within_the_upload_bound_after_every_retry(
        silent_endpoint: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backup_exporter.storage.azure.client")
    store = AzureStorage("c", connection_string=servers.azurite_connection_string(silent_endpoint), read_timeout=1,
                         block_size=64 * 1024, max_concurrency=1)
    upload = store.start_upload(archive("2026-11-27T13-00-00Z"))
    started = time.monotonic()
    try:
        with pytest.raises(StorageError, match="is unreachable: connection timed out"):
            upload.write(payload(64 * 1024))  # one block staged in the background
            upload.commit({})
    finally:
        upload.abort()
        store.close()
    elapsed = time.monotonic() - started
    assert elapsed <= worst_case_seconds(UPLOAD_RETRIES, read_timeout=1) + 3
    lines = retry_lines(caplog)
    assert [line.split("; ")[1].split(" in ")[0] for line in lines] == ["retry 1 of 3", "retry 2 of 3", "retry 3 of 3"]
    assert all(line.startswith("Azure Blob PUT /devstoreaccount1/c/prod/orders/2026-11-27T13-00-00Z.archive.gz: "
                               "timed out") for line in lines)


def test_the_default_budgets_bound_a_failing_run_below_three_minutes() -> None:
    # What a run does against a storage that stopped answering, each step at its worst: the failing
    # stage or commit, then the status record it tries to write (its read fails first), then the lock:
    # waiting for a renewal in progress, and one attempt to release the lease.
    bound = (worst_case_seconds(UPLOAD_RETRIES) + worst_case_seconds(RETRIES) + JOIN_SECONDS
             + worst_case_seconds(RELEASE_RETRIES))
    assert bound == 167
    assert bound <= 180


def test_a_wrong_account_key_is_an_authentication_failure_without_the_key(
        container: str, azure_connection_string: str) -> None:
    wrong_key = "A" * 86 + "=="
    store = AzureStorage(container,
                         connection_string=azure_connection_string.replace(servers.AZURITE_KEY, wrong_key))
    try:
        with pytest.raises(AuthenticationFailed) as excinfo:
            store.ping()
        with pytest.raises(AuthenticationFailed):
            store.list_objects(PREFIX)
    finally:
        store.close()
    message = str(excinfo.value)
    assert excinfo.value.exit_code == ExitCode.NOPERM
    assert wrong_key not in message and "AccountKey" not in message
    assert message.startswith(f"Azure Blob azure://devstoreaccount1/{container}: authentication failed")


def test_a_malformed_connection_string_is_a_configuration_error_without_its_text() -> None:
    with pytest.raises(ConfigError) as excinfo:
        AzureStorage("c", connection_string="not a connection string secret123")
    assert "secret123" not in str(excinfo.value)
    with pytest.raises(ConfigError):
        AzureStorage("c")


def test_an_account_url_with_a_sas_token_works_and_keeps_the_token_secret(
        azurite: servers.Server, container: str, service: BlobServiceClient) -> None:
    sas = generate_container_sas(
        servers.AZURITE_ACCOUNT, container, account_key=servers.AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True, add=True,
                                           create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1))
    url = f"http://{azurite.address}/{servers.AZURITE_ACCOUNT}"
    store = AzureStorage(container, account_url=url, sas_token=sas)
    try:
        commit(store, archive("2026-11-27T13-00-00Z"), b"via sas")
        assert [b.size for b in store.list_objects(PREFIX)] == [7]
        assert store.describe() == f"azure://devstoreaccount1/{container}"
        with pytest.raises(StorageError) as excinfo:
            store.read(archive("1999-01-01T00-00-00Z"))
        assert sas not in str(excinfo.value) and "sig=" not in str(excinfo.value)
    finally:
        store.close()


def test_a_lease_expires_by_itself_when_its_holder_stops_renewing_and_lasts_while_renewed(
        container: str, azure_connection_string: str) -> None:
    renewing = AzureStorage(container, connection_string=azure_connection_string, lease_seconds=15,
                            renew_seconds=4)
    silent = AzureStorage(container, connection_string=azure_connection_string, lease_seconds=15,
                          renew_seconds=3600)  # a holder that hangs or died: never renews
    other = AzureStorage(container, connection_string=azure_connection_string)
    kept = renewing.lock(LOCK, "renewing holder")
    dead = silent.lock("prod/users/_lock", "dead holder")
    kept.__enter__()
    dead.__enter__()
    released = False
    try:
        assert other.lock_holder("prod/users/_lock") == "dead holder"
        time.sleep(16.5)
        assert other.lock_holder("prod/users/_lock") is None
        with other.lock("prod/users/_lock", "successor"):
            assert other.lock_holder("prod/users/_lock") == "successor"
        with pytest.raises(LockHeld, match="plan 'prod/orders' is locked by renewing holder"), \
                other.lock(LOCK, "successor"):
            pass
        kept.__exit__(None, None, None)
        released = True
        assert other.lock_holder(LOCK) is None
    finally:
        if not released:
            kept.__exit__(None, None, None)
        dead.__exit__(None, None, None)  # its lease is long gone: releasing fails quietly
        for store in (renewing, silent, other):
            store.close()


def test_an_upload_whose_plan_lock_was_lost_is_refused_and_leaves_nothing(
        container: str, azure_connection_string: str, service: BlobServiceClient) -> None:
    holder = AzureStorage(container, connection_string=azure_connection_string, block_size=64 * 1024,
                          lease_seconds=15, renew_seconds=0.3)
    successor = AzureStorage(container, connection_string=azure_connection_string)
    name = archive("2026-11-27T13-00-00Z")
    try:
        with holder.lock(LOCK, "slow run"):
            upload = holder.start_upload(name)
            upload.write(payload(200_000))
            # An operator (or a bug elsewhere) breaks the lease and another run takes the plan.
            BlobLeaseClient(service.get_blob_client(container, LOCK)).break_lease(lease_break_period=0)
            with successor.lock(LOCK, "successor"):
                deadline = time.monotonic() + 10
                with pytest.raises(StorageError, match="lease of prod/orders/_lock was lost") as excinfo:
                    while time.monotonic() < deadline:  # the next renewal finds the lease gone
                        upload.write(payload(64 * 1024))
                        time.sleep(0.05)
                    upload.commit({"size": "1"})
                assert excinfo.value.exit_code == ExitCode.STORAGE
                upload.abort()
                with pytest.raises(StorageError, match="not committed"):
                    second = holder.start_upload(archive("2026-11-27T13-00-01Z"))
                    second.write(b"x")
                    second.commit({})
                second.abort()
                assert successor.lock_holder(LOCK) == "successor"
        assert [n for n in blob_names(service, container) if n != LOCK] == []
        # The successor's own uploads are not affected by the other object's lost lease.
        with successor.lock(LOCK, "successor"):
            commit(successor, name, b"fine")
        assert [b.name for b in archives(successor, PREFIX)] == [name]
    finally:
        holder.close()
        successor.close()


def test_a_lock_whose_holder_cannot_be_recorded_fails_cleanly_and_releases_its_lease(
        azure: AzureStorage) -> None:
    # A holder far beyond what an HTTP header may carry makes the service refuse the metadata after the
    # lease was acquired: the error must be the storage's own, and the lease must not linger.
    with pytest.raises(StorageError) as excinfo, azure.lock(LOCK, "h" * 40_000):
        pass
    assert "lock prod/orders/_lock" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert azure.lock_holder(LOCK) is None
    with azure.lock(LOCK, "next run"):
        assert azure.lock_holder(LOCK) == "next run"


def test_a_holder_with_non_ascii_text_is_recorded_readably(azure: AzureStorage) -> None:
    with azure.lock(LOCK, "backupctl on höst-ä pid 7\nsecond line"):
        assert azure.lock_holder(LOCK) == "backupctl on höst-ä pid 7 second line"


def test_status_and_lock_blobs_sit_beside_the_backups(
        azure: AzureStorage, service: BlobServiceClient, container: str) -> None:
    azure.put(STATUS, b"{}")
    with azure.lock(LOCK, "x"):
        pass
    assert blob_names(service, container) == [LOCK, STATUS]


def test_only_the_batch_not_supported_failure_allows_deleting_one_by_one() -> None:
    def error(status: int, message: str) -> HttpResponseError:
        exc = HttpResponseError(message=message)
        exc.status_code = status
        return exc

    assert batch_unsupported(error(501, "The batch API is not implemented"))
    assert batch_unsupported(error(400, "Operation not supported"))
    assert not batch_unsupported(error(403, "not supported"))
    assert not batch_unsupported(error(500, "Internal error"))
    assert not batch_unsupported(error(400, "Bad request"))
    assert not batch_unsupported(RuntimeError("not supported"))
