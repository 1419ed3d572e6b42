"""Bad input, table-driven: each bad configuration or command line gets one line naming the problem and
where it is, its documented exit code, no traceback, and leaves storage untouched."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backup_exporter.storage.local import LocalStorage
from tests import servers
from tests.cli_helpers import backupctl, base_env

GOOD_PLAN = """plans:
  main:
    mongodb_uri: ${MONGODB_URI}
    engine: native
"""


def _storage(path: Path) -> str:
    return f"storage:\n  path: {path}\n"


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    says: list[str]  # each must appear (case-insensitive) in the error line
    config: str | None = None  # YAML; "{storage}" is replaced by a local storage section
    env: dict[str, str] = field(default_factory=dict)


# The local storage directory and a good archive in it are set up by the `workspace` fixture.
CASES = [
    # ---------------------------------------------------------------- configuration files (exit 78)
    Case("yaml-syntax", ["check-config"], 78, ["backup.yml", "line"], "{storage}plans: [unclosed\n"),
    Case("unknown-top-key", ["check-config"], 78, ["storag"], "{storage}storag: {}\n" + GOOD_PLAN),
    Case("unknown-plan-key", ["check-config"], 78, ["plans.main.schedul"],
         "{storage}" + GOOD_PLAN + "    schedul: '@daily'\n"),
    Case("retention-wrong-type", ["check-config"], 78, ["plans.main.retention", "keep_last"],
         "{storage}" + GOOD_PLAN + "    retention: {keep_last: many}\n"),
    Case("retention-negative", ["check-config"], 78, ["plans.main.retention", "keep_last"],
         "{storage}" + GOOD_PLAN + "    retention: {keep_last: -1}\n"),
    Case("cron-out-of-range", ["check-config"], 78, ["plans.main.schedule", "61"],
         "{storage}" + GOOD_PLAN + "    schedule: '61 * * * *'\n"),
    Case("cron-four-fields", ["check-config"], 78, ["plans.main.schedule"],
         "{storage}" + GOOD_PLAN + "    schedule: '0 * * *'\n"),
    Case("unknown-timezone", ["check-config"], 78, ["plans.main.timezone", "Mars/Olympus"],
         "{storage}" + GOOD_PLAN + "    timezone: Mars/Olympus\n"),
    Case("bad-duration", ["check-config"], 78, ["plans.main.timeout", "soon"],
         "{storage}" + GOOD_PLAN + "    timeout: soon\n"),
    Case("bad-size", ["check-config"], 78, ["storage.block_size"],
         "storage:\n  container: c\n  connection_string: ${AZURE_STORAGE_CONNECTION_STRING}\n"
         "  block_size: huge\n" + GOOD_PLAN),
    Case("uri-not-mongodb", ["check-config"], 78, ["plans.main.mongodb_uri", "mongodb://"],
         "{storage}plans:\n  main:\n    mongodb_uri: http://db:27017/\n"),
    Case("uri-missing", ["check-config"], 78, ["plans.main", "mongodb_uri"],
         "{storage}plans:\n  main:\n    engine: native\n"),
    Case("unknown-engine", ["check-config"], 78, ["plans.main.engine", "pgdump"],
         "{storage}" + GOOD_PLAN.replace("native", "pgdump")),
    Case("bad-plan-name", ["check-config"], 78, ["bad name!"],
         "{storage}plans:\n  'bad name!':\n    mongodb_uri: ${MONGODB_URI}\n"),
    Case("azure-without-container", ["check-config"], 78, ["storage.container"],
         "storage:\n  connection_string: ${AZURE_STORAGE_CONNECTION_STRING}\n" + GOOD_PLAN),
    Case("malformed-connection-string", ["check-config"], 78, ["storage.connection_string"],
         "storage:\n  container: c\n  connection_string: garbage\n" + GOOD_PLAN),
    Case("unset-variable", ["check-config"], 78, ["NOT_SET_ANYWHERE"],
         "{storage}plans:\n  main:\n    mongodb_uri: ${NOT_SET_ANYWHERE}\n"),
    Case("bad-listen", ["check-config"], 78, ["server.listen", "nope"],
         "{storage}server:\n  listen: nope\n" + GOOD_PLAN),
    Case("missing-config-file", ["check-config", "--config", "/nonexistent/backup.yml"], 78,
         ["/nonexistent/backup.yml"]),
    Case("config-is-a-directory", ["check-config", "--config", "/tmp"], 78, ["/tmp"]),
    # ----------------------------------------------------------------- environment-only mode (exit 78)
    Case("env-no-uri", ["check-config"], 78, ["MONGODB_URI"],
         env={"AZURE_STORAGE_CONNECTION_STRING": "x", "AZURE_STORAGE_CONTAINER": "c", "MONGODB_URI": ""}),
    Case("env-bad-schedule", ["check-config"], 78, ["BACKUP_SCHEDULE"],
         env={"BACKUP_LOCAL_DIR": "{storage_path}", "BACKUP_SCHEDULE": "every day"}),
    Case("env-bad-keep-last", ["check-config"], 78, ["BACKUP_KEEP_LAST"],
         env={"BACKUP_LOCAL_DIR": "{storage_path}", "BACKUP_KEEP_LAST": "abc"}),
    Case("env-bad-timeout", ["check-config"], 78, ["BACKUP_TIMEOUT"],
         env={"BACKUP_LOCAL_DIR": "{storage_path}", "BACKUP_TIMEOUT": "-5s"}),
    # -------------------------------------------------------------------- command lines (exit 64)
    Case("unknown-command", ["frobnicate"], 64, ["frobnicate"], "{storage}" + GOOD_PLAN),
    Case("unknown-option", ["run-now", "--frob"], 64, ["--frob"], "{storage}" + GOOD_PLAN),
    Case("bad-log-format", ["--log-format", "xml", "check-config"], 64, ["xml"], "{storage}" + GOOD_PLAN),
    Case("bad-daemon-listen", ["daemon", "--listen", "not-an-address"], 64, ["not-an-address"],
         "{storage}" + GOOD_PLAN),
    Case("restore-without-target", ["restore", "--latest"], 64, ["--to"], "{storage}" + GOOD_PLAN),
    Case("restore-to-non-mongodb", ["restore", "--latest", "--to", "http://db/", "--yes"], 64,
         ["--to", "mongodb"], "{storage}" + GOOD_PLAN),
    # ------------------------------------------------------------------ names and archives
    Case("unknown-plan", ["status", "--plan", "nosuch"], 78, ["nosuch"], "{storage}" + GOOD_PLAN),
    Case("unknown-backup", ["verify", "main/2020-01-01T00-00-00Z.archive.gz"], 74,
         ["main/2020-01-01T00-00-00Z.archive.gz"], "{storage}" + GOOD_PLAN),
    Case("corrupted-archive", ["verify", "main/2026-01-01T00-00-00Z.archive.gz"], 65,
         ["main/2026-01-01T00-00-00Z.archive.gz"], "{storage}" + GOOD_PLAN),
    Case("truncated-archive", ["verify", "main/2026-01-02T00-00-00Z.archive.gz"], 65, ["truncated"],
         "{storage}" + GOOD_PLAN),
    Case("restore-truncated-archive", ["restore", "main/2026-01-02T00-00-00Z.archive.gz", "--to", "{mongo_uri}",
                                       "--ns-from", "*", "--ns-to", "badinput_*", "--yes", "--engine", "native"],
         65, ["truncated"], "{storage}" + GOOD_PLAN),
    # -------------------------------------------------------------- unreachable parts
    Case("mongodb-unreachable", ["run-now"], 69, ["127.0.0.1:1", "unreachable"], "{storage}" + GOOD_PLAN,
         env={"MONGODB_URI": "mongodb://u:canary-pw@127.0.0.1:1/?serverSelectionTimeoutMS=500"}),
    Case("azure-unreachable", ["run-now"], 74, ["unreachable"],
         "storage:\n  container: c\n  connection_string: ${AZURE_STORAGE_CONNECTION_STRING}\n" + GOOD_PLAN,
         env={"AZURE_STORAGE_CONNECTION_STRING": servers.azurite_connection_string(1)}),
]


@pytest.fixture
def workspace(tmp_path: Path, golden_archive_gz: Path) -> Path:
    """A local storage directory holding one corrupted and one truncated archive of plan 'main'."""
    storage = tmp_path / "storage"
    storage.mkdir()
    data = golden_archive_gz.read_bytes()
    corrupted = bytearray(data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    backend = LocalStorage(storage)
    for name, content in (("main/2026-01-01T00-00-00Z.archive.gz", bytes(corrupted)),
                          ("main/2026-01-02T00-00-00Z.archive.gz", data[: len(data) // 2])):
        # Stored with their own checksum, so only the archive itself is wrong.
        upload = backend.start_upload(name)
        upload.write(content)
        upload.commit({"sha256": hashlib.sha256(content).hexdigest(), "size": str(len(content))})
    backend.close()
    return storage


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every stored object but the plan's records (a failed run records its failure, as documented)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("_")}


def test_the_table_holds_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_naming_it_and_its_exit_code(case: Case, tmp_path: Path, workspace: Path,
                                                             mongo_uri: str) -> None:
    before = _snapshot(workspace)
    env = base_env(MONGODB_URI=mongo_uri, AZURE_STORAGE_CONNECTION_STRING=servers.azurite_connection_string(1))
    env.update({k: v.replace("{storage_path}", str(workspace)) for k, v in case.env.items()})
    env = {k: v for k, v in env.items() if v != ""}
    args = [arg.replace("{mongo_uri}", mongo_uri) for arg in case.args]
    if case.config is not None:
        config = tmp_path / "backup.yml"
        config.write_text(case.config.replace("{storage}", _storage(workspace)))
        args += ["--config", str(config)]
    result = backupctl(args, env, timeout=60)
    # Info and warning lines (a child's own output, each storage retry) are not error lines.
    lines = [line for line in result.stderr.splitlines() if line.strip() and " info " not in line
             and " warning " not in line]
    assert result.returncode == case.code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert lines, "no error line at all"
    final = lines[-1].lower()
    for needle in case.says:
        assert needle.lower() in final, f"{needle!r} not in the error line {lines[-1]!r}"
    # One problem, one line (run-now also logs the failure once before its summary line).
    assert len(lines) <= (2 if case.args[0] == "run-now" else 1), result.stderr
    assert "canary-pw" not in result.stderr + result.stdout
    assert _snapshot(workspace) == before, "bad input changed what is in storage"
    assert not os.environ.get("NOT_SET_ANYWHERE")
