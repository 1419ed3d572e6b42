"""What a child process gets from us (system/execute.py): no secrets in its environment, and every
line it writes on stderr redacted before it is logged or kept."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from backup_exporter.system.execute import Command, child_environment

URI = "mongodb://backup:Child-Pa55@db.internal:27017/?authSource=admin"


def test_children_get_no_secret_variables_but_the_rest_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", URI)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=abc123==;")
    monkeypatch.setenv("BACKUP_PUSHGATEWAY_PASSWORD", "push-secret")
    monkeypatch.setenv("SOME_API_TOKEN", "tok")
    monkeypatch.setenv("HARMLESS_LOOKING", "https://user:hidden@proxy.example/")  # a secret by its value
    monkeypatch.setenv("LANG", "C.UTF-8")
    command = Command([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"])
    out = command.stdout.read().decode()
    assert command.wait(timeout=30) == 0
    for secret in ("Child-Pa55", "abc123", "push-secret", "tok", "hidden", "MONGODB_URI", "BACKUP_PUSHGATEWAY"):
        assert secret not in out
    assert '"LANG": "C.UTF-8"' in out and '"PATH"' in out
    assert "MONGODB_URI" not in child_environment()


def test_every_stderr_line_of_a_child_is_redacted_before_it_is_logged_or_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    # What real mongodump prints when it cannot connect.
    line = f"Failed: can't create session: failed to connect to {URI}: auth error"
    caplog.set_level(logging.INFO, logger="backup_exporter.system.execute")
    script = f"import sys; print({line!r}, file=sys.stderr); print('plain x-Child-Pa55-x', file=sys.stderr)"
    command = Command([sys.executable, "-c", script], stdout=subprocess.DEVNULL, secrets=["Child-Pa55"])
    assert command.wait(timeout=30) == 0
    kept = command.stderr_tail(5)
    assert len(kept) == 2 and "db.internal" in kept[0]
    assert all("Child-Pa55" not in text for text in kept + [r.getMessage() for r in caplog.records])
