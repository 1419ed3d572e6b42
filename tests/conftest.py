"""Session-wide real servers: SecantusDB (MongoDB wire protocol) and Azurite (Azure Blob)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from pymongo import MongoClient

from tests import servers
from tests.mongo_tools import mongo_tools  # noqa: F401  (a fixture, shared by every test file)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def mongo_server(server_logs: Path) -> Iterator[servers.Server]:
    server = servers.start_secantus(server_logs)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: servers.Server) -> str:
    return f"mongodb://{mongo_server.address}/?directConnection=true"


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[MongoClient]:  # type: ignore[type-arg]
    client: MongoClient = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)  # type: ignore[type-arg]
    yield client
    client.close()


@pytest.fixture(scope="session")
def azurite(server_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    server = servers.start_azurite(server_logs, tmp_path_factory.mktemp("azurite-data"))
    yield server
    server.stop(grace=1)  # its data is temporary; it ignores SIGTERM for a long while


@pytest.fixture(scope="session")
def azure_connection_string(azurite: servers.Server) -> str:
    return azurite.extra["connection_string"]


@pytest.fixture
def container(azure_connection_string: str) -> Iterator[str]:
    """A fresh, empty Azurite container for one test; deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    service = BlobServiceClient.from_connection_string(azure_connection_string)
    service.create_container(name)
    yield name
    try:
        service.delete_container(name)
    finally:
        service.close()


@pytest.fixture
def golden_archive() -> Path:
    return DATA / "mongodump-100.8.0-sample.archive"


@pytest.fixture
def golden_archive_gz() -> Path:
    return DATA / "mongodump-100.8.0-sample.archive.gz"


@pytest.fixture
def golden_manifest() -> Path:
    return DATA / "mongodump-100.8.0-sample.manifest.json"
