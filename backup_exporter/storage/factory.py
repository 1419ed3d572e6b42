"""Build the configured storage backend."""

from __future__ import annotations

from backup_exporter.config import StorageConfig
from backup_exporter.storage.azure import AzureStorage
from backup_exporter.storage.base import Storage
from backup_exporter.storage.local import LocalStorage


def open_storage(cfg: StorageConfig) -> Storage:
    """Return the backend for `cfg` (no network I/O yet; call ping() to check).

    Raises ConfigError for missing or malformed credentials."""
    if cfg.type == "local":
        assert cfg.path is not None
        return LocalStorage(cfg.path)
    return AzureStorage(cfg.container, connection_string=cfg.connection_string, account_url=cfg.account_url,
                        sas_token=cfg.sas_token, block_size=cfg.block_size, max_concurrency=cfg.max_concurrency,
                        create_container=cfg.create_container, lease_seconds=cfg.lease_seconds,
                        renew_seconds=cfg.lease_seconds / 3)
