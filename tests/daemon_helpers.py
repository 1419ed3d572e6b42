"""Start the real daemon as a subprocess and read its endpoints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import servers


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return r.read().decode()

    def value(self, name: str, **labels: str) -> float | None:
        """Return the sample's value from a scrape, or None when the series is absent."""
        return sample(self.metrics(), name, **labels)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/api/v1/status", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_daemon(config: Path, env: Mapping[str, str], log_dir: Path, port: int | None = None) -> DaemonProcess:
    port = port or servers.free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"daemon-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", "daemon", "--config", str(config),
                             "--listen", f"127.0.0.1:{port}"], env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    daemon = DaemonProcess(proc, port, log_path)
    try:
        servers.wait_until(lambda: servers.http_ok(f"{daemon.url}/healthz"), 30, "daemon /healthz")
    except Exception:
        daemon.stop(9)
        raise RuntimeError(f"daemon did not start:\n{daemon.log()}") from None
    return daemon


def post(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body else None


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """Return the value of the sample `name` with `labels` in one scrape's text, or None when it is absent
    (several values compared with each other must come from one scrape)."""
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None
