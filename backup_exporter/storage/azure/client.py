"""Building the SDK client of one container: credentials, the retry policy and timeouts (which bound how
long a storage that stops answering can hold a run), and the secrets that must never appear in an error."""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from backup_exporter.core.errors import BackupError, ConfigError

log = logging.getLogger(__name__)

MiB = 1 << 20

# Timeouts and retries, chosen so that a storage that stops answering fails a run within a known bound
# (README, "Timeouts and retries"). One attempt of a request waits at most CONNECT_TIMEOUT for the
# connection, or READ_TIMEOUT for any single socket read or send once connected (a stalled endpoint
# accepts the connection and then goes silent, a dead one never connects: either way an attempt ends
# within READ_TIMEOUT). Retries back off 0.5 + 2**n seconds, +-1 s of jitter: 2.5, 4.5, 8.5 s.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20
# Small requests (status records, leases, listings, properties): one retry. 2 x 20 + 3.5 = 43.5 s at most.
RETRIES = 1
# Staging a block and committing the block list retry longer, so that a throttled or briefly failing
# service does not cost a dump that has run for an hour: 4 x 20 + 2.5 + 4.5 + 8.5 + 3 = 98.5 s at most.
UPLOAD_RETRIES = 3
# Releasing a lease is not retried: an unreleased lease expires by itself within its period.
RELEASE_RETRIES = 0
# A service that answers 500/503 (throttling, ServerBusy) answers at once: such answers are retried at least
# this often whatever the request's budget, which bounds timeouts and resets only. 2.5+4.5+8.5+16.5 s of
# backoff at most.
STATUS_RETRIES = 4
_BACKOFF_INITIAL = 0.5
_BACKOFF_BASE = 2
_BACKOFF_JITTER = 1


def worst_case_seconds(retries: int, read_timeout: float = READ_TIMEOUT) -> float:
    """Return the longest one request can take with `retries` retries: every attempt stalled for the
    whole read timeout, every backoff at its longest."""
    backoffs = sum(_BACKOFF_INITIAL + float(_BACKOFF_BASE ** n) + _BACKOFF_JITTER for n in range(1, retries + 1))
    return (retries + 1) * read_timeout + backoffs


class LoggedRetry(ExponentialRetry):
    """The SDK's exponential retry with one budget for every kind of failure, logging each retry.

    The SDK counts connection errors, read errors (timeouts, resets) and retryable HTTP statuses apart,
    each with its own default of 3, whatever retry_total says; a per-request retry_total then did not
    raise the read budget. Here a request's retry_total (the policy's, or the one a call passes) is also
    its connect and read budget, so the bound of a request whose endpoint stops answering is
    worst_case_seconds(retry_total); error statuses, answered at once, get at least STATUS_RETRIES.
    """

    def __init__(self, retries: int) -> None:
        super().__init__(
            initial_backoff=_BACKOFF_INITIAL,  # type: ignore[arg-type]  # annotated int, floats work
            increment_base=_BACKOFF_BASE,
            retry_total=retries,
            random_jitter_range=_BACKOFF_JITTER,
        )
        self.connect_retries = self.read_retries = self.status_retries = retries

    def configure_retries(self, request: Any) -> dict[str, Any]:
        override = request.context.options.get("retry_total")
        settings: dict[str, Any] = super().configure_retries(request)
        budget = self.total_retries if override is None else override
        settings["connect"] = settings["read"] = budget
        settings["status"] = settings["total"] = max(budget, STATUS_RETRIES)
        settings["budget"] = budget
        return settings

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None,
                  error: Any = None) -> bool:
        again: bool = super().increment(settings, request, response=response, error=error)
        budget = settings.get("budget", self.total_retries)
        if error is not None:
            # The SDK keeps connect and read budgets apart: a connection refused, then a reset, then a timeout
            # would get a retry from each. One budget for all of them keeps worst_case_seconds the bound.
            settings["errors"] = settings.get("errors", 0) + 1
            again = again and settings["errors"] <= budget
        if again:
            if error is not None:
                reason = "timed out" if "timed out" in str(error).lower() else type(error).__name__
                settings["of"] = budget
            else:
                reason = f"HTTP {getattr(response, 'status_code', '?')}"
                settings["of"] = max(budget, STATUS_RETRIES)
            # The path names the blob; the query (SAS token, block id) is left out.
            path = urllib.parse.urlsplit(str(getattr(request, "url", ""))).path
            settings["what"] = f"{getattr(request, 'method', '?')} {path}: {reason}"
        return again

    def sleep(self, settings: dict[str, Any], transport: Any) -> None:
        backoff = self.get_backoff_time(settings)
        log.warning("Azure Blob %s; retry %d of %d in %.1f s", settings.get("what", "request failed"),
                    settings["count"], settings.get("of", self.total_retries), backoff)
        if backoff > 0:
            transport.sleep(backoff)


@dataclass
class Connection:
    """The clients of one container, what they need closing, and the secrets they were built from."""

    service: BlobServiceClient
    container: ContainerClient
    account: str
    host: str
    secrets: list[str] = field(default_factory=list)
    owned_credential: Any = None  # a DefaultAzureCredential this module created, closed with the service


def client_options(connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT) -> dict[str, Any]:
    """Return the SDK options every client gets: the retry policy, timeouts, download piece sizes."""
    return {
        "retry_policy": LoggedRetry(RETRIES),
        "connection_timeout": connect_timeout,
        "read_timeout": read_timeout,
        # Download in block-sized pieces rather than the 32 MiB first request.
        "max_single_get_size": 4 * MiB,
        "max_chunk_get_size": 4 * MiB,
    }


def connect(container: str, *, connection_string: str | None, account_url: str | None, sas_token: str | None,
            credential: object | None, connect_timeout: float = CONNECT_TIMEOUT,
            read_timeout: float = READ_TIMEOUT) -> Connection:
    """Return the clients for `container` (no network I/O yet).

    Credentials, in order: `connection_string`; else `account_url` with `sas_token` or `credential`; else
    `account_url` with azure.identity's DefaultAzureCredential. Raises ConfigError for missing or malformed
    input, never quoting it.
    """
    secrets = [s for s in (connection_string, sas_token) if s]
    owned: Any = None
    options = client_options(connect_timeout, read_timeout)
    try:
        if connection_string:
            for part in connection_string.split(";"):
                key, _, value = part.partition("=")
                if key.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
                    secrets.append(value.strip())
            service = BlobServiceClient.from_connection_string(connection_string, **options)
        elif account_url:
            cred: Any = sas_token or credential
            if cred is None:
                # Imported lazily: azure.identity is slow to import and only this path needs it.
                from azure.identity import DefaultAzureCredential

                cred = owned = DefaultAzureCredential()
            service = BlobServiceClient(account_url, credential=cred, **options)
        else:
            raise ConfigError(["Azure storage needs a connection string or an account URL"])
    except BackupError:
        raise
    except (ValueError, AzureError) as exc:
        # The parser's message may quote the connection string: say only what kind of input is bad.
        what = "connection string" if connection_string else "account URL"
        raise ConfigError([f"invalid Azure storage {what} ({type(exc).__name__})"]) from None
    parsed = urllib.parse.urlsplit(service.url)
    host = parsed.hostname or "unknown host"
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return Connection(service=service, container=service.get_container_client(container),
                      account=service.account_name or host, host=host, secrets=secrets, owned_credential=owned)
