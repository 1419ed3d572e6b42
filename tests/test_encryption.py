"""age encryption at rest: the streams themselves, the configuration, and encrypted backups made by both
engines into a local directory and Azurite, restored by backupctl and by `age -d | mongorestore`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.storage.blob import ContainerClient
from pymongo import MongoClient
from pyrage import x25519

from backup_exporter import config
from backup_exporter.archive import encryption
from backup_exporter.core import naming
from backup_exporter.core.cancel import CancelToken
from backup_exporter.core.errors import ConfigError, DecryptionFailed, ExitCode, StorageError, WrongIdentity
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.engines.mongodump import MongodumpEngine
from backup_exporter.operations.housekeeping import run_restore_check
from backup_exporter.operations.run import run_backup
from backup_exporter.operations.verify import verify_backup
from backup_exporter.repository import backups, records
from backup_exporter.serve.metrics import metrics_registry
from backup_exporter.storage.local import LocalStorage
from backup_exporter.system.execute import Command
from tests import dataset, servers
from tests.cli_helpers import FAKE_MONGODUMP, backupctl, base_env

GZIP_MAGIC = b"\x1f\x8b"
MONGO_TOOLS = Path(os.environ.get("MONGO_TOOLS_BIN", "/nonexistent"))
AGE = shutil.which("age")


# ------------------------------------------------------------------------------------------ helpers


class Key:
    """An age key pair written like age-keygen writes it."""

    def __init__(self, directory: Path, name: str = "key") -> None:
        identity = x25519.Identity.generate()
        self.secret = str(identity)
        self.public = str(identity.to_public())
        self.fingerprint = encryption.fingerprint(self.public)
        self.path = directory / f"{name}.txt"
        self.path.write_text(f"# created: 2026-12-02T00:00:00Z\n# public key: {self.public}\n{self.secret}\n")
        self.path.chmod(0o600)


class Collect:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)


def non_ttl_include(prefix: str, flag: str) -> list[str]:
    """Restore options selecting shop.users and shop.orders: restoring the TTL index of shop.sessions can
    make SecantusDB sweep expired documents, the module's source data included."""
    return [flag, f"{prefix}_shop.users", flag, f"{prefix}_shop.orders"]


def require_tool(path: Path) -> str:
    if not path.exists():
        pytest.skip(f"{path.name} not found in $MONGO_TOOLS_BIN ({MONGO_TOOLS}): real-tool test skipped")
    return str(path)


def require_age() -> str:
    if AGE is None:
        pytest.skip("the age CLI is not installed (apt-get install age): interop test skipped")
    return AGE


@pytest.fixture(scope="module")
def source(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[tuple[str, dict[str, int]]]:
    prefix = f"en{uuid.uuid4().hex[:6]}"
    counts = dataset.load(mongo_client, prefix, per_collection=20)
    yield prefix, counts
    for suffix in ("", "r", "a", "c"):
        dataset.drop(mongo_client, prefix + suffix)


def write_config(tmp_path: Path, storage_yaml: str, db_prefix: str, recipients: list[str], engine: str = "native",
                 extra: str = "", identity_file: Path | None = None, file_name: str = "backup.yml") -> Path:
    path = tmp_path / file_name
    identity = f"      identity_file: {identity_file}\n" if identity_file else ""
    # Real mongodump has no --nsInclude: it is given one database instead.
    selection = (f'mongodump_args: ["--db={db_prefix}_shop"]' if engine == "mongodump" and db_prefix != "x"
                 else f'include: ["{db_prefix}_*"]')
    path.write_text(f"""storage:
{storage_yaml}
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    prefix: prod
    engine: {engine}
    mongodump_path: {MONGO_TOOLS / 'mongodump'}
    {selection}
    encryption:
      recipients: {json.dumps(recipients)}
{identity}{extra}""")
    return path


def local_yaml(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"  type: local\n  path: {directory}"


def azure_yaml(container: str) -> str:
    return f"  container: {container}\n  connection_string: ${{AZURE_STORAGE_CONNECTION_STRING}}"


def stored_objects(kind: str, where: Path | str, connection_string: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Return every object in the storage with its bytes and metadata (local: every file, hidden ones too)."""
    found: dict[str, tuple[bytes, dict[str, str]]] = {}
    if kind == "local":
        root = Path(where)
        for path in root.rglob("*"):
            if path.is_file():
                found[str(path.relative_to(root))] = (path.read_bytes(), {})
        for name in list(found):
            if name.endswith(".meta.json"):
                meta = json.loads(found[name][0])
                base = name[: -len(".meta.json")]
                if base in found:
                    found[base] = (found[base][0], dict(meta.get("metadata", meta)))
        return found
    client = ContainerClient.from_connection_string(connection_string, str(where))
    try:
        for blob in client.list_blobs(include=["metadata"]):
            found[blob.name] = (client.download_blob(blob.name).readall(), dict(blob.metadata or {}))
    finally:
        client.close()
    return found


def assert_no_plain_archive(objects: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    for name, (data, _) in objects.items():
        assert not data.startswith(GZIP_MAGIC), f"{name} holds a plain gzip archive"
        if ".archive.gz" in name and not name.endswith(".meta.json"):
            assert data.startswith(encryption.AGE_MAGIC), f"{name} is not age data"


def plan_of(cfg_path: Path, env: dict[str, str]) -> config.PlanConfig:
    return config.load(str(cfg_path), env).plan("main")


# ------------------------------------------------------------------------------------- the streams


def test_what_the_encrypting_writer_stores_decrypts_with_the_age_cli_to_the_same_bytes(tmp_path: Path) -> None:
    age = require_age()
    key = Key(tmp_path)
    plain = os.urandom(300_000) + b"archive" * 200_000
    sink = Collect()
    writer = encryption.EncryptingWriter(sink, [key.public])
    for start in range(0, len(plain), 65_000):
        writer.write(plain[start:start + 65_000])
    sha, size = writer.finish()
    stored = sink.buffer.getvalue()
    assert (sha, size) == (hashlib.sha256(stored).hexdigest(), len(stored))
    assert stored.startswith(encryption.AGE_MAGIC) and plain[:1000] not in stored
    (tmp_path / "blob.age").write_bytes(stored)
    out = subprocess.run([age, "-d", "-i", str(key.path), str(tmp_path / "blob.age")], capture_output=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == plain


def test_the_age_cli_output_decrypts_through_decrypted_chunks(tmp_path: Path) -> None:
    age = require_age()
    key = Key(tmp_path)
    plain = os.urandom(200_000)
    encrypted = subprocess.run([age, "-r", key.public], input=plain, capture_output=True, check=True).stdout
    identities = encryption.load_identities(key.path, {})
    assert identities is not None
    assert b"".join(encryption.decrypted_chunks(io.BytesIO(encrypted), identities, name="n")) == plain


def test_an_age_keygen_identity_file_loads_and_matches_its_printed_public_key(tmp_path: Path) -> None:
    keygen = shutil.which("age-keygen")
    if keygen is None:
        pytest.skip("age-keygen is not installed (apt-get install age)")
    made = subprocess.run([keygen, "-o", str(tmp_path / "k.txt")], capture_output=True, text=True, check=True)
    public = made.stderr.split("Public key:")[1].strip()
    identities = encryption.load_identities(tmp_path / "k.txt", {})
    assert identities is not None
    assert encryption.identity_fingerprints(identities) == [encryption.fingerprint(public)]


def test_encrypting_and_decrypting_64_mib_holds_only_a_few_mib(tmp_path: Path) -> None:
    key = Key(tmp_path)
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB, repeated: cheap to make, not kept whole
    blob = tmp_path / "big.age"
    tracemalloc.start()
    try:
        with blob.open("wb") as out:
            writer = encryption.EncryptingWriter(out, [key.public])
            for _ in range(64):
                writer.write(block)
            _, size = writer.finish()
        encrypt_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        identities = encryption.load_identities(key.path, {})
        assert identities is not None
        total, digest = 0, hashlib.sha256()
        with blob.open("rb") as stored:
            for chunk in encryption.decrypted_chunks(stored, identities, name="big"):
                total += len(chunk)
                digest.update(chunk)
        decrypt_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size > 64 << 20 and total == 64 << 20
    assert digest.hexdigest() == hashlib.sha256(block * 64).hexdigest()
    assert encrypt_peak < 12 << 20, encrypt_peak
    assert decrypt_peak < 12 << 20, decrypt_peak


def test_a_storage_failure_while_encrypting_surfaces_as_that_storage_error(tmp_path: Path) -> None:
    class FailingTarget:
        def __init__(self) -> None:
            self.writes = 0

        def write(self, data: bytes) -> None:
            self.writes += 1
            if self.writes > 2:
                raise StorageError("upload of block 3 failed")

    writer = encryption.EncryptingWriter(FailingTarget(), [Key(tmp_path).public])
    with pytest.raises(StorageError, match="block 3"):
        for _ in range(100):
            writer.write(b"x" * (1 << 20))
        writer.finish()


def test_the_wrong_identity_raises_wrong_identity_naming_fingerprints_only(tmp_path: Path) -> None:
    right, wrong = Key(tmp_path, "right"), Key(tmp_path, "wrong")
    sink = Collect()
    writer = encryption.EncryptingWriter(sink, [right.public])
    writer.write(b"data" * 1000)
    writer.finish()
    identities = encryption.load_identities(wrong.path, {})
    assert identities is not None
    with pytest.raises(WrongIdentity) as caught:
        b"".join(encryption.decrypted_chunks(io.BytesIO(sink.buffer.getvalue()), identities, name="b",
                                             recipients=[right.fingerprint]))
    assert caught.value.exit_code == ExitCode.NOPERM
    assert right.fingerprint in caught.value.message and wrong.fingerprint in caught.value.message
    assert wrong.secret not in caught.value.message and "AGE-SECRET-KEY" not in caught.value.message


def test_a_changed_byte_in_the_ciphertext_raises_decryption_failed(tmp_path: Path) -> None:
    key = Key(tmp_path)
    sink = Collect()
    writer = encryption.EncryptingWriter(sink, [key.public])
    writer.write(os.urandom(200_000))
    writer.finish()
    data = bytearray(sink.buffer.getvalue())
    data[len(data) // 2] ^= 0x01
    identities = encryption.load_identities(key.path, {})
    assert identities is not None
    with pytest.raises(DecryptionFailed) as caught:
        b"".join(encryption.decrypted_chunks(io.BytesIO(bytes(data)), identities, name="b"))
    assert caught.value.exit_code == ExitCode.DATA and "changed or damaged" in caught.value.message


def test_an_identity_file_without_a_key_is_a_config_error_that_does_not_echo_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("AGE-SECRET-KEY-1NOTAKEYATALLBUTSECRETLOOKING\n")
    with pytest.raises(ConfigError) as caught:
        encryption.load_identities(bad, {})
    assert "line 1" in caught.value.message and "NOTAKEY" not in caught.value.message
    with pytest.raises(ConfigError, match="cannot read"):
        encryption.load_identities(tmp_path / "missing.txt", {})
    assert encryption.load_identities(None, {}) is None


# ------------------------------------------------------------------------------------ configuration


def test_a_malformed_recipient_is_a_configuration_error_at_start(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, local_yaml(tmp_path / "b"), "x", ["age1notakey"])
    result = backupctl(["check-config", "--config", str(cfg)], base_env(MONGODB_URI="mongodb://db/"))
    assert result.returncode == 78
    assert "plans.main.encryption.recipients" in result.stderr and "is not an age X25519 recipient" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    run = backupctl(["run-now", "--config", str(cfg)], base_env(MONGODB_URI="mongodb://db/"))
    assert run.returncode == 78
    assert list((tmp_path / "b").iterdir()) == []  # nothing was written, not even a status record


def test_an_encryption_section_without_recipients_is_a_configuration_error(tmp_path: Path) -> None:
    raw = yaml.safe_load(f"storage: {{path: {tmp_path}}}\nplans:\n  a:\n    mongodb_uri: mongodb://db/\n"
                         "    encryption: {identity_file: /keys/k.txt}\n")
    with pytest.raises(ConfigError, match=r"plans\.a\.encryption.: has no recipient"):
        config.from_mapping(raw, {}, "f.yml")


def test_recipients_come_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    first, second = Key(tmp_path, "a"), Key(tmp_path, "b")
    listing = tmp_path / "recipients.txt"
    listing.write_text(f"# ops team\n{first.public}\n\n{second.public}\n")
    env = {"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": str(tmp_path),
           "BACKUP_AGE_RECIPIENTS_FILE": str(listing), "BACKUP_AGE_RECIPIENTS": f"{first.public}",
           "BACKUP_AGE_IDENTITY_FILE": str(first.path)}
    encrypted = config.from_environment(env).plan(None).encryption
    assert encrypted is not None
    assert encrypted.recipients == (first.public, second.public) and encrypted.identity_file == first.path
    with pytest.raises(ConfigError, match=r"BACKUP_AGE_RECIPIENTS: .age1broken. is not an age X25519 recipient"):
        config.from_environment({**env, "BACKUP_AGE_RECIPIENTS": f"{first.public},age1broken"})


def test_encrypted_names_are_backups_for_time_of_and_listing(tmp_path: Path) -> None:
    name = naming.backup_name("prod", "main", naming.time_of("x/2026-11-27T13-00-00Z.archive.gz")  # type: ignore[arg-type]
                              , encrypted=True)
    assert name == "prod/main/2026-11-27T13-00-00Z.archive.gz.age"
    assert naming.time_of(name) == naming.time_of("prod/main/2026-11-27T13-00-00Z.archive.gz")
    assert naming.time_of(name + ".bak") is None
    storage = LocalStorage(tmp_path)
    for item in (name, "prod/main/2026-11-28T13-00-00Z.archive.gz"):
        upload = storage.start_upload(item)
        upload.write(b"x")
        upload.commit({"sha256": hashlib.sha256(b"x").hexdigest(), "size": "1"})
    listed = [b.name for b in backups.archives(storage, "prod/main")]
    assert listed == [name, "prod/main/2026-11-28T13-00-00Z.archive.gz"]


# --------------------------------------------------------------------------- encrypted backups, end to end


@pytest.mark.parametrize("engine", ["native", "mongodump"])
@pytest.mark.parametrize("kind", ["local", "azure"])
def test_an_encrypted_backup_restores_through_backupctl_and_through_age_and_mongorestore(
        kind: str, engine: str, tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str,
        mongo_client: MongoClient[dict[str, Any]], request: pytest.FixtureRequest) -> None:
    mongorestore = require_tool(MONGO_TOOLS / "mongorestore")
    if engine == "mongodump":
        require_tool(MONGO_TOOLS / "mongodump")
    age = require_age()
    prefix, counts = source
    key = Key(tmp_path)
    connection_string = ""
    if kind == "azure":
        where: Path | str = request.getfixturevalue("container")
        connection_string = request.getfixturevalue("azure_connection_string")
        cfg = write_config(tmp_path, azure_yaml(str(where)), prefix, [key.public], engine)
    else:
        where = tmp_path / "backups"
        cfg = write_config(tmp_path, local_yaml(where), prefix, [key.public], engine)
    env = base_env(MONGODB_URI=mongo_uri, RESTORE_URI=mongo_uri, AZURE_STORAGE_CONNECTION_STRING=connection_string,
                   PATH=f"{MONGO_TOOLS}{os.pathsep}{os.environ['PATH']}")

    made = backupctl(["run-now", "--config", str(cfg)], env)
    assert made.returncode == 0, made.stderr
    name = made.stdout.split("\t")[0]
    assert name.endswith(".archive.gz.age")

    objects = stored_objects(kind, where, connection_string)
    assert_no_plain_archive(objects)
    blob, metadata = objects[name]
    assert metadata["encryption"] == "age" and metadata["recipients"] == key.fingerprint
    assert metadata["sha256"] == hashlib.sha256(blob).hexdigest() and metadata["size"] == str(len(blob))
    assert metadata["engine"] == engine

    listed = backupctl(["list", "--config", str(cfg), "--json"], env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == name and row["encrypted"] == "age" and row["recipients"] == [key.fingerprint]
    table = backupctl(["list", "--config", str(cfg)], env)
    assert f"age:{key.fingerprint[:8]}" in next(line for line in table.stdout.splitlines() if name in line)

    shallow = backupctl(["verify", "--latest", "--config", str(cfg)], env)
    assert shallow.returncode == 0, shallow.stderr
    assert "stored bytes only" in shallow.stdout and "was not read" in shallow.stdout

    deep = backupctl(["verify", "--latest", "--deep", "--identity-file", str(key.path), "--config", str(cfg)], env)
    assert deep.returncode == 0, deep.stderr
    assert "every CRC checked" in deep.stdout
    dumped = {ns: n for ns, n in counts.items() if engine == "native" or ns.startswith(f"{prefix}_shop.")}
    for ns, count in dumped.items():
        assert f"{count} documents" in next(line for line in deep.stdout.splitlines() if ns in line)

    restore_engine = "mongorestore" if engine == "mongodump" else "native"
    restored = backupctl(["restore", name, "--config", str(cfg), "--to", "env:RESTORE_URI", "--yes", "--drop",
                          "--identity-file", str(key.path), "--engine", restore_engine, "--check",
                          "--ns-from", f"{prefix}_shop.*", "--ns-to", f"{prefix}r_shop.*",
                          *non_ttl_include(prefix, "--ns-include")], env)
    assert restored.returncode == 0, restored.stderr
    assert "document counts match" in restored.stdout
    for coll in ("users", "orders"):
        assert dataset.digest(mongo_client, f"{prefix}r_shop.{coll}") == dataset.digest(
            mongo_client, f"{prefix}_shop.{coll}")

    # The disaster-recovery path of the README, without backupctl: age -d | mongorestore --archive --gzip.
    (tmp_path / "blob.age").write_bytes(blob)
    decrypt = subprocess.Popen([age, "-d", "-i", str(key.path), str(tmp_path / "blob.age")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    restore = subprocess.run([mongorestore, "--uri", mongo_uri, "--archive", "--gzip", "--drop",
                              *non_ttl_include(prefix, "--nsInclude"), f"--nsFrom={prefix}_shop.*",
                              f"--nsTo={prefix}a_shop.*"],
                             stdin=decrypt.stdout, capture_output=True, text=True, timeout=120, check=False)
    assert decrypt.stdout is not None
    decrypt.stdout.close()
    assert decrypt.wait(30) == 0
    assert restore.returncode == 0, restore.stderr
    for coll in ("users", "orders"):
        assert dataset.digest(mongo_client, f"{prefix}a_shop.{coll}") == dataset.digest(
            mongo_client, f"{prefix}_shop.{coll}")


@pytest.fixture
def encrypted_local(tmp_path: Path, source: tuple[str, dict[str, int]],
                    mongo_uri: str) -> tuple[Path, dict[str, str], str, Key, Path]:
    """One native encrypted backup in a local directory: (config, env, name, key, directory)."""
    prefix, _ = source
    key = Key(tmp_path)
    where = tmp_path / "backups"
    cfg = write_config(tmp_path, local_yaml(where), prefix, [key.public])
    env = base_env(MONGODB_URI=mongo_uri, RESTORE_URI=mongo_uri)
    made = backupctl(["run-now", "--config", str(cfg)], env)
    assert made.returncode == 0, made.stderr
    return cfg, env, made.stdout.split("\t")[0], key, where


def test_the_wrong_identity_fails_verify_deep_and_restore_with_one_line_and_exit_77(
        tmp_path: Path, encrypted_local: tuple[Path, dict[str, str], str, Key, Path],
        source: tuple[str, dict[str, int]], mongo_client: MongoClient[dict[str, Any]]) -> None:
    cfg, env, name, key, _ = encrypted_local
    prefix, _ = source
    other = Key(tmp_path, "other")
    deep = backupctl(["verify", name, "--deep", "--identity-file", str(other.path), "--config", str(cfg)], env)
    assert deep.returncode == 77, deep.stderr
    assert len(deep.stderr.strip().splitlines()) == 1 and "Traceback" not in deep.stderr
    assert key.fingerprint in deep.stderr and other.fingerprint in deep.stderr
    restored = backupctl(["restore", name, "--config", str(cfg), "--to", "env:RESTORE_URI", "--yes",
                          "--engine", "native", "--ns-from", f"{prefix}_*", "--ns-to", f"{prefix}c_*"],
                         {**env, "BACKUP_AGE_IDENTITY_FILE": str(other.path)})
    assert restored.returncode == 77, restored.stderr
    assert len(restored.stderr.strip().splitlines()) == 1
    assert f"{prefix}c_shop" not in mongo_client.list_database_names()
    missing = backupctl(["verify", name, "--deep", "--config", str(cfg)], env)
    assert missing.returncode == 78 and "--identity-file" in missing.stderr


def test_a_changed_byte_fails_verify_with_and_without_the_key_and_restore(
        encrypted_local: tuple[Path, dict[str, str], str, Key, Path], source: tuple[str, dict[str, int]]) -> None:
    cfg, env, name, key, where = encrypted_local
    prefix, _ = source
    path = where / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    shallow = backupctl(["verify", name, "--config", str(cfg)], env)
    assert shallow.returncode == 65 and "sha256 mismatch" in shallow.stderr
    deep = backupctl(["verify", name, "--deep", "--identity-file", str(key.path), "--config", str(cfg)], env)
    assert deep.returncode == 65 and "does not decrypt" in deep.stderr and "sha256 mismatch" in deep.stderr
    assert len(deep.stderr.strip().splitlines()) == 1
    restored = backupctl(["restore", name, "--config", str(cfg), "--to", "env:RESTORE_URI", "--yes",
                          "--identity-file", str(key.path), "--engine", "native",
                          "--ns-from", f"{prefix}_*", "--ns-to", f"{prefix}c_*",
                          *non_ttl_include(prefix, "--ns-include")], env)
    assert restored.returncode == 65, restored.stderr


def test_no_identity_shows_up_in_output_logs_status_or_metadata(
        tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str) -> None:
    prefix, _ = source
    key = Key(tmp_path)
    where = tmp_path / "backups"
    cfg = write_config(tmp_path, local_yaml(where), prefix, [key.public],
                       extra="    restore_check: {uri: '${RESTORE_URI}'}\n")
    # The canary identity reaches backupctl only through the environment, as a Kubernetes secret would.
    env = base_env(MONGODB_URI=mongo_uri, RESTORE_URI=mongo_uri, BACKUP_AGE_IDENTITY=key.secret)
    outputs = []
    for args in (["run-now", "--log-format", "json", "-v"], ["list"], ["list", "--json"], ["status", "--json"],
                 ["check-config"], ["verify", "--latest"], ["verify", "--latest", "--deep", "-v"],
                 ["restore", "--latest", "--to", "env:RESTORE_URI", "--yes", "--engine", "native", "--dry-run"]):
        result = backupctl([*args, "--config", str(cfg)], env)
        assert result.returncode == 0, (args, result.stderr)
        outputs += [result.stdout, result.stderr]
    # A malformed identity in the environment is named, never shown.
    broken = key.secret[:-6] + "QQQQQQ"
    failed = backupctl(["verify", "--latest", "--deep", "--config", str(cfg)], {**env, "BACKUP_AGE_IDENTITY": broken})
    assert failed.returncode == 78 and "BACKUP_AGE_IDENTITY" in failed.stderr
    outputs += [failed.stdout, failed.stderr]
    stored = b"".join(data + json.dumps(meta).encode() for data, meta in stored_objects("local", where, "").values())
    for secret in (key.secret, broken):
        body = secret[len("AGE-SECRET-KEY-1"):]
        for text in outputs:
            assert body not in text and body.lower() not in text
        assert body.encode() not in stored and body.lower().encode() not in stored


def test_rotating_recipients_keeps_old_backups_restorable_with_the_old_identity(
        tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str) -> None:
    prefix, counts = source
    old, new = Key(tmp_path, "old"), Key(tmp_path, "new")
    storage = LocalStorage(tmp_path / "backups")
    env = {"MONGODB_URI": mongo_uri}
    before = run_backup(plan_of(write_config(tmp_path, local_yaml(tmp_path / "backups"), prefix, [old.public]),
                                env), storage)
    after = run_backup(plan_of(write_config(tmp_path, local_yaml(tmp_path / "backups"), prefix, [new.public]),
                               env), storage)
    assert before.exit_code == 0 and after.exit_code == 0, (before.message, after.message)
    old_ids, new_ids = encryption.load_identities(old.path, {}), encryption.load_identities(new.path, {})
    assert verify_backup(storage, before.name, deep=True, identities=old_ids).namespaces == counts
    assert verify_backup(storage, after.name, deep=True, identities=new_ids).namespaces == counts
    with pytest.raises(WrongIdentity):
        verify_backup(storage, before.name, deep=True, identities=new_ids)
    with pytest.raises(WrongIdentity):
        verify_backup(storage, after.name, deep=True, identities=old_ids)
    # An identity file holding both keys opens both backups.
    both = tmp_path / "both.txt"
    both.write_text(old.path.read_text() + new.path.read_text())
    both_ids = encryption.load_identities(both, {})
    for name in (before.name, after.name):
        assert verify_backup(storage, name, deep=True, identities=both_ids).contents_checked


@pytest.mark.parametrize("mode", ["fail", "crash", "truncated", "garbage", "empty"])
def test_a_failed_encrypted_run_leaves_no_archive_plain_or_encrypted(
        mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Key(tmp_path)
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", mode)
    cfg = write_config(tmp_path, local_yaml(tmp_path / "backups"), "x", [key.public], engine="mongodump")
    plan = plan_of(cfg, {"MONGODB_URI": "mongodb://127.0.0.1:1/"})
    storage = LocalStorage(tmp_path / "backups")
    engine = MongodumpEngine(plan.mongodb_uri, binary=FAKE_MONGODUMP, plan=plan.name)
    outcome = run_backup(plan, storage, engine=engine)
    assert outcome.exit_code not in (0, ExitCode.STORAGE, ExitCode.CONFIG), outcome.message
    objects = stored_objects("local", tmp_path / "backups", "")
    assert_no_plain_archive(objects)
    assert [n for n in objects if ".archive" in n] == [], objects.keys()


def test_the_golden_archive_through_the_encrypting_runner_is_checked_before_encryption(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, golden_archive_gz: Path) -> None:
    key = Key(tmp_path)
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "ok")
    cfg = write_config(tmp_path, local_yaml(tmp_path / "backups"), "x", [key.public], engine="mongodump")
    plan = plan_of(cfg, {"MONGODB_URI": "mongodb://127.0.0.1:1/"})
    storage = LocalStorage(tmp_path / "backups")
    # mongodump_compress: the fake's own gzip is stored (encrypted) unchanged, so it is the golden archive.
    outcome = run_backup(plan, storage, engine=MongodumpEngine(plan.mongodb_uri, binary=FAKE_MONGODUMP,
                                                               mongodump_compress=True))
    assert outcome.exit_code == 0, outcome.message
    info = storage.stat(outcome.name)
    golden = golden_archive_gz.read_bytes()
    assert info.metadata["archive_sha256"] == hashlib.sha256(golden).hexdigest()
    assert info.metadata["archive_size"] == str(len(golden))
    assert outcome.sha256 == info.metadata["sha256"] != info.metadata["archive_sha256"]
    record = records.load(storage, naming.status_name(plan.prefix, plan.name), plan.name)
    assert record.last_success is not None and record.last_success.name == outcome.name


@pytest.fixture
def scratch(server_logs: Path) -> Iterator[str]:
    """A second, empty server for the drill, which restores under the same names (with --drop)."""
    server = servers.start_secantus(server_logs)
    yield f"mongodb://{server.address}/?directConnection=true"
    server.stop()


def test_a_restore_drill_decrypts_with_the_plans_identity_file_and_fails_clearly_without(
        tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str, scratch: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix, _ = source
    key = Key(tmp_path)
    monkeypatch.delenv("BACKUP_AGE_IDENTITY", raising=False)
    monkeypatch.delenv("BACKUP_AGE_IDENTITY_FILE", raising=False)
    storage = LocalStorage(tmp_path / "backups")
    drill = f"    restore_check: {{uri: '{scratch}'}}\n"
    without = plan_of(write_config(tmp_path, local_yaml(tmp_path / "backups"), prefix, [key.public], extra=drill),
                      {"MONGODB_URI": mongo_uri})
    assert run_backup(without, storage).exit_code == 0
    assert run_restore_check(without, storage, None) is False
    verdict = records.load(storage, naming.status_name(without.prefix, without.name), without.name).restore_check
    assert verdict is not None and "is encrypted" in verdict["message"] and "identity" in verdict["message"]
    cfg_path = write_config(tmp_path, local_yaml(tmp_path / "backups"), prefix, [key.public], extra=drill,
                            identity_file=key.path, file_name="with-key.yml")
    with_key = plan_of(cfg_path, {"MONGODB_URI": mongo_uri})
    assert with_key.encryption is not None and with_key.encryption.identity_file == key.path
    assert run_restore_check(with_key, storage, None) is True


def test_encrypting_and_decrypting_threads_end_when_a_stream_stops_early(tmp_path: Path) -> None:
    key = Key(tmp_path)
    before = threading.active_count()
    writer = encryption.EncryptingWriter(Collect(), [key.public])
    writer.write(b"x" * 100)
    writer.abort()
    sink = Collect()
    full = encryption.EncryptingWriter(sink, [key.public])
    full.write(os.urandom(1 << 20))
    full.finish()
    identities = encryption.load_identities(key.path, {})
    assert identities is not None
    chunks = encryption.decrypted_chunks(io.BytesIO(sink.buffer.getvalue()), identities, name="n")
    next(chunks)
    chunks.close()
    assert threading.active_count() == before


def test_the_bytes_of_an_encrypted_upload_in_flight_are_already_ciphertext(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, golden_archive_gz: Path) -> None:
    key = Key(tmp_path)
    monkeypatch.setenv("FAKE_MONGODUMP_MODE", "slow")  # ~20 KiB/s of the golden archive until stopped
    where = tmp_path / "backups"
    plan = plan_of(write_config(tmp_path, local_yaml(where), "x", [key.public], engine="mongodump"),
                   {"MONGODB_URI": "mongodb://127.0.0.1:1/"})
    cancel = CancelToken()
    outcomes = []
    runner = threading.Thread(target=lambda: outcomes.append(run_backup(
        plan, LocalStorage(where), cancel=cancel,
        # mongodump's own gzip (as the fake writes it, slowly): its bytes reach the encryption as they come.
        engine=MongodumpEngine(plan.mongodb_uri, binary=FAKE_MONGODUMP, grace_seconds=2, mongodump_compress=True))))
    runner.start()
    try:
        partial: list[Path] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not partial:
            partial = [p for p in where.rglob(".*partial*") if p.stat().st_size > 64 << 10]
            time.sleep(0.2)
        assert partial, "no upload in flight with more than one age chunk"
        in_flight = partial[0].read_bytes()
    finally:
        cancel.cancel(signal.SIGTERM)
        runner.join(30)
    assert in_flight.startswith(encryption.AGE_MAGIC)
    assert golden_archive_gz.read_bytes()[:512] not in in_flight
    assert outcomes and outcomes[0].result == "interrupted"
    assert [p for p in where.rglob("*") if ".archive" in p.name] == []


def test_no_child_process_inherits_the_identity_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = Key(tmp_path)
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", key.secret)
    command = Command(["env"], stdout=subprocess.PIPE)
    seen = command.stdout.read().decode()
    command.wait()
    command.close()
    assert "PATH=" in seen and "BACKUP_AGE_IDENTITY" not in seen and key.secret not in seen


def test_verify_verdicts_are_kept_per_depth_and_exported_as_stored_or_deep(
        tmp_path: Path, source: tuple[str, dict[str, int]], mongo_uri: str) -> None:
    prefix, _counts = source
    key = Key(tmp_path)
    storage_dir = tmp_path / "backups"
    cfg = write_config(tmp_path, local_yaml(storage_dir), prefix, [key.public])
    env = base_env(MONGODB_URI=mongo_uri)
    made = backupctl(["run-now", "--config", str(cfg)], env)
    assert made.returncode == 0, made.stderr
    name = made.stdout.split("\t")[0]
    shallow = backupctl(["verify", name, "--config", str(cfg)], env)
    deep = backupctl(["verify", name, "--deep", "--identity-file", str(key.path), "--config", str(cfg)], env)
    assert shallow.returncode == 0 and deep.returncode == 0, shallow.stderr + deep.stderr
    storage = LocalStorage(storage_dir)
    state = PlanStates(["main"])
    registry = metrics_registry(state)
    state.apply_status(records.load(storage, "prod/main/_status.json", "main"))
    for depth in ("stored", "deep"):
        assert registry.get_sample_value("backup_last_verify_success", {"plan": "main", "depth": depth}) == 1
        assert (registry.get_sample_value("backup_last_verify_timestamp_seconds",
                                          {"plan": "main", "depth": depth}) or 0) > 0
    # A changed byte: the stored-bytes verify fails, and says so in the metric; the deep verdict stays.
    blob = storage_dir / name
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    broken = backupctl(["verify", name, "--config", str(cfg)], env)
    assert broken.returncode == 65, broken.stderr
    state.apply_status(records.load(storage, "prod/main/_status.json", "main"))
    assert registry.get_sample_value("backup_last_verify_success", {"plan": "main", "depth": "stored"}) == 0
    assert registry.get_sample_value("backup_last_verify_success", {"plan": "main", "depth": "deep"}) == 1
