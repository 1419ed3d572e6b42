"""The Dockerfile installs MongoDB Database Tools from MongoDB's signed APT repository with the key
pinned by fingerprint and the package by version; scripts/_deploy_checks.py dockerfile enforces it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("deploy_checks", REPO / "scripts" / "_deploy_checks.py")
assert _spec is not None and _spec.loader is not None
deploy_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deploy_checks)

DOCKERFILE = (REPO / "Dockerfile").read_text()
DOCKERIGNORE = (REPO / ".dockerignore").read_text()
VERIFIER = REPO / "deploy" / "docker" / "openpgp_fingerprint.py"
DEBIAN_KEY = Path("/etc/apt/trusted.gpg.d/debian-archive-bookworm-stable.asc")
DEBIAN_KEY_FINGERPRINT = "4D64FEC119C2029067D6E791F8D2585B8783D481"


def test_the_dockerfile_pins_the_key_and_the_version_with_no_placeholder() -> None:
    assert deploy_checks.dockerfile_problems(DOCKERFILE, DOCKERIGNORE) == []
    assert "ARG MONGO_TOOLS_VERSION=100.8.0" in DOCKERFILE  # the version the suite runs against


@pytest.mark.parametrize(("change", "words"), [
    (("MONGO_TOOLS_VERSION=100.8.0", "MONGO_TOOLS_VERSION=100"), "exact version"),
    (('"mongodb-database-tools=${MONGO_TOOLS_VERSION}"', "mongodb-database-tools"), "pinned version"),
    (("E58830201F7DD82CD808AA84160D26BB1785BA38", "160D26BB1785BA38"), "40-hex-digit"),
    (("signed-by=/etc/apt/keyrings/mongodb-server-7.0.asc] ", ""), "signed-by"),
    (('"${MONGO_APT_KEY_FINGERPRINT}"\n', '"${MONGO_APT_KEY_FINGERPRINT}" || true\nARG MONGO_TOOLS_SHA256=FILL_IN\n'),
     "placeholder"),
])
def test_the_check_refuses_a_dockerfile_that_pins_less(change: tuple[str, str], words: str) -> None:
    old, new = change
    assert old in DOCKERFILE
    problems = deploy_checks.dockerfile_problems(DOCKERFILE.replace(old, new), DOCKERIGNORE)
    assert any(words in p for p in problems), problems


def test_the_key_check_accepts_the_pinned_fingerprint_and_refuses_any_other() -> None:
    if not DEBIAN_KEY.exists():
        pytest.skip(f"{DEBIAN_KEY} (a Debian 12 archive key to check against) is not on this machine")
    ok = subprocess.run([sys.executable, str(VERIFIER), str(DEBIAN_KEY), DEBIAN_KEY_FINGERPRINT],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    wrong = subprocess.run([sys.executable, str(VERIFIER), str(DEBIAN_KEY),
                            "E58830201F7DD82CD808AA84160D26BB1785BA38"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 1 and f"key fingerprint {DEBIAN_KEY_FINGERPRINT}" in wrong.stderr
