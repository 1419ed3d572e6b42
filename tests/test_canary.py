"""A canary for every secret at once: a MongoDB password, a SAS token and an API token generated for this
run are used by real runs (both engines, a failing run whose tool prints the URI, the daemon and its API),
and afterwards appear in no log line, stdout or stderr, metric, API answer, blob metadata, status record,
or argv of any process the suite started while the runs were in progress."""

from __future__ import annotations

import json
import os
import secrets
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import AccountSasPermissions, ContainerClient, ResourceTypes, generate_account_sas
from pymongo import MongoClient

from tests import servers
from tests.cli_helpers import backupctl, base_env
from tests.daemon_helpers import post, start_daemon
from tests.process_watch import ArgvWatcher

PASSWORD = f"canary-{secrets.token_hex(12)}"
API_TOKEN = f"tok-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def canary_mongo(server_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    storage = str(tmp_path_factory.mktemp("secantus-canary"))
    setup = servers.start_secantus(server_logs, extra_args=["--storage-path", storage])
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(f"mongodb://{setup.address}/?directConnection=true",
                                                          serverSelectionTimeoutMS=5000)
        client.admin.command("createUser", "backup", pwd=PASSWORD, roles=["root"])
        client["canary_db"]["items"].insert_many([{"_id": i, "v": "x" * 50} for i in range(300)])
        client.close()
    finally:
        setup.stop()
    server = servers.start_secantus(server_logs, extra_args=["--storage-path", storage, "--auth"])
    yield server
    server.stop()


def _sas() -> str:
    """Return an account SAS for Azurite: its signature is a secret made for this run."""
    return generate_account_sas(
        servers.AZURITE_ACCOUNT, servers.AZURITE_KEY,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1))


def _config(path: Path, container: str, port: int, engine: str) -> Path:
    path.write_text(f"""storage:
  container: {container}
  account_url: http://127.0.0.1:{port}/{servers.AZURITE_ACCOUNT}
  sas_token: ${{AZURE_STORAGE_SAS_TOKEN}}
server:
  api_token: ${{BACKUP_API_TOKEN:-}}
  status_refresh: 1s
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    engine: {engine}
    mongodump_path: ${{MONGODUMP:-mongodump}}
    include: ["canary_db.*"]
    schedule: "0 0 1 1 *"
    timeout: 20s
""")
    return path


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode(errors="replace")


def test_no_secret_leaves_the_process_anywhere(tmp_path: Path, canary_mongo: servers.Server, container: str,
                                               azurite: servers.Server, azure_connection_string: str) -> None:
    sas = _sas()
    sig = next(part.split("=", 1)[1] for part in sas.split("&") if part.startswith("sig="))
    canaries = [PASSWORD, API_TOKEN, sig, urllib.parse.unquote(sig)]
    tools = os.environ.get("MONGO_TOOLS_BIN")
    uri = f"mongodb://backup:{PASSWORD}@{canary_mongo.address}/?directConnection=true&authSource=admin"
    env = base_env(MONGODB_URI=uri, AZURE_STORAGE_SAS_TOKEN=sas, BACKUP_API_TOKEN=API_TOKEN,
                   MONGODUMP=str(Path(tools) / "mongodump") if tools else "mongodump")
    outputs: list[str] = []
    engines = ["native", *(["mongodump"] if tools else [])]
    with ArgvWatcher() as watcher:
        for engine in engines:
            config = _config(tmp_path / f"{engine}.yml", container, azurite.port, engine)
            ok = backupctl(["run-now", "--config", str(config), "--log-format", "json"], env)
            outputs += [ok.stdout, ok.stderr]
            assert ok.returncode == 0, ok.stderr
            # The tool cannot connect: mongodump prints the whole URI in its own error (it ignores the
            # URI's serverSelectionTimeoutMS and retries until backupctl's own ping finds no server).
            dead = dict(env, MONGODB_URI=f"mongodb://backup:{PASSWORD}@127.0.0.1:1/?serverSelectionTimeoutMS=1500")
            failed = backupctl(["run-now", "--config", str(config)], dead)
            outputs += [failed.stdout, failed.stderr]
            assert failed.returncode not in (0, 70), failed.stderr
        config = _config(tmp_path / "native.yml", container, azurite.port, "native")
        for command in (["status", "--json"], ["list", "--json"], ["check-config"], ["status"]):
            shown = backupctl([*command, "--config", str(config)], env)
            outputs += [shown.stdout, shown.stderr]
            assert shown.returncode == 0, shown.stderr
        daemon = start_daemon(config, env, tmp_path / "logs")
        try:
            servers.wait_until(lambda: servers.http_ok(f"{daemon.url}/metrics"), 30, "/metrics")
            code, body = post(f"{daemon.url}/api/v1/plans/main/run", API_TOKEN)
            assert code == 202, body
            servers.wait_until(lambda: daemon.value("backup_runs_total", plan="main", result="success") == 1,
                               60, "the daemon's run")
            outputs += [_get(f"{daemon.url}/metrics"), _get(f"{daemon.url}/api/v1/status"),
                        json.dumps(body)]
        finally:
            daemon.stop()
        outputs.append(daemon.log())
    admin = ContainerClient.from_connection_string(azure_connection_string, container)
    try:
        for blob in admin.list_blobs(include=["metadata"]):
            outputs.append(json.dumps({"name": blob.name, "metadata": blob.metadata}))
            if blob.name.endswith(".json"):
                outputs.append(admin.download_blob(blob.name).readall().decode(errors="replace"))
    finally:
        admin.close()
    assert any("canary_db" in text for text in outputs)  # the runs did produce what is searched
    assert len(watcher.seen) > 10
    for canary in canaries:
        for text in outputs:
            assert canary not in text, f"a secret leaked: ...{text[max(0, text.find(canary) - 80):][:200]}"
        for argv in watcher.seen:
            assert canary not in argv, f"a secret is in a process's argv: {argv[:200]}"
