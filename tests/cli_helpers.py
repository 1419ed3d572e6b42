"""Run the real `backupctl` program as a subprocess, the way operators do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

TOOLS = Path(__file__).parent / "tools"
FAKE_MONGODUMP = str(TOOLS / "fake-mongodump")


def base_env(**overrides: str) -> dict[str, str]:
    """Return a clean environment for backupctl: PATH and Python only, plus overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MONGODB_", "AZURE_", "BACKUP", "FAKE_MONGODUMP"))}
    env.update(overrides)
    return env


def backupctl(args: Sequence[str], env: Mapping[str, str], timeout: float = 120,
              input_text: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run backupctl to its end; `cwd` (a test's own folder) lets the test find the tools it started."""
    return subprocess.run([sys.executable, "-m", "backup_exporter.cli.main", *args], env=dict(env), text=True,
                          capture_output=True, timeout=timeout, input=input_text, cwd=cwd)


def start_backupctl(args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", *args], env=dict(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)


def native_azure_config(path: Path, container: str, db_prefix: str, extra: str = "") -> Path:
    """Write a YAML config: plan 'main' (prefix 'prod', native engine) backing up `<db_prefix>_*` into the
    Azurite container; the URI and connection string come from the environment. Return the path."""
    path.write_text(f"""storage:
  container: {container}
  connection_string: ${{AZURE_STORAGE_CONNECTION_STRING}}
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    prefix: prod
    engine: native
    include: ["{db_prefix}_*"]
{extra}""")
    return path
