"""backup_exporter: MongoDB backups streamed into Azure Blob Storage, watched by Prometheus."""

__version__ = "0.1.0"
