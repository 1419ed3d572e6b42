"""The storage contract on Azure Blob Storage: backend.AzureStorage, built from one module per concern
(errors, client, upload, lease, backend)."""

from backup_exporter.storage.azure.backend import AzureStorage
from backup_exporter.storage.azure.errors import batch_unsupported

__all__ = ["AzureStorage", "batch_unsupported"]
