"""The storage contract on a local directory (a mounted volume, or tests): see backend.LocalStorage."""

from backup_exporter.storage.local.backend import LocalStorage

__all__ = ["LocalStorage"]
