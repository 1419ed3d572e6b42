"""Building the SDK client of one container: credentials, retry policy and timeouts, and the secrets that
must never appear in an error."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from backup_exporter.core.errors import BackupError, ConfigError

MiB = 1 << 20

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


@dataclass
class Connection:
    """The clients of one container, what they need closing, and the secrets they were built from."""

    service: BlobServiceClient
    container: ContainerClient
    account: str
    host: str
    secrets: list[str] = field(default_factory=list)
    owned_credential: Any = None  # a DefaultAzureCredential this module created, closed with the service


def client_options() -> dict[str, Any]:
    """Return the SDK options every client gets: the retry policy, timeouts, download piece sizes."""
    return {
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


def connect(container: str, *, connection_string: str | None, account_url: str | None, sas_token: str | None,
            credential: object | None) -> Connection:
    """Return the clients for `container` (no network I/O yet).

    Credentials, in order: `connection_string`; else `account_url` with `sas_token` or `credential`; else
    `account_url` with azure.identity's DefaultAzureCredential. Raises ConfigError for missing or malformed
    input, never quoting it.
    """
    secrets = [s for s in (connection_string, sas_token) if s]
    owned: Any = None
    options = client_options()
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
