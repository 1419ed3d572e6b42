"""The real MongoDB Database Tools (mongodump, mongorestore) for the tests that need them.

They are found through ONE environment variable, MONGO_TOOLS_BIN (a directory holding both binaries),
which scripts/test sets when ../shared/mongo-tools exists next to the repository. A test that needs them
asks for the `mongo_tools` fixture; without them it is SKIPPED with the reason, never passed.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV_VAR = "MONGO_TOOLS_BIN"


@dataclass(frozen=True)
class MongoTools:
    bin_dir: Path
    mongodump: str
    mongorestore: str
    version: str

    def path_env(self, env: dict[str, str]) -> dict[str, str]:
        """Return env with the tools' directory first on PATH (how `backupctl restore` finds mongorestore)."""
        return {**env, "PATH": f"{self.bin_dir}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"}


def find_mongo_tools() -> MongoTools | str:
    """Return the tools, or the reason they cannot be used."""
    value = os.environ.get(ENV_VAR, "")
    if not value:
        return f"{ENV_VAR} is not set (scripts/test sets it when ../shared/mongo-tools exists)"
    bin_dir = Path(value)
    paths = {name: bin_dir / name for name in ("mongodump", "mongorestore")}
    for name, path in paths.items():
        if not os.access(path, os.X_OK):
            return f"{ENV_VAR}={value}: no executable {name} there"
    out = subprocess.run([str(paths["mongodump"]), "--version"], capture_output=True, text=True, timeout=30,
                         check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    version = first[0].rsplit(" ", 1)[-1] if first else "unknown"
    return MongoTools(bin_dir, str(paths["mongodump"]), str(paths["mongorestore"]), version)


@pytest.fixture(scope="session")
def mongo_tools() -> MongoTools:
    found = find_mongo_tools()
    if isinstance(found, str):
        pytest.skip(f"real mongodump/mongorestore unavailable: {found}")
    return found
