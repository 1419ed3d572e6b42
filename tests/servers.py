"""Start and stop the real servers the suite talks to, on 127.0.0.1 and free ports.

Each helper returns a handle with the address and a stop() that kills the whole process group, so a
failing test never leaves a server behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE_BIN = REPO / ".cache" / "npm" / "node_modules" / ".bin"

# Azurite's published development account: a well-known public test key, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_tool(name: str) -> str:
    """Return the path of an executable from the venv, the npm cache or PATH; fail clearly when missing."""
    for candidate in (Path(os.sys.executable).parent / name, NODE_BIN / name):  # type: ignore[attr-defined]
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: run scripts/test, which installs it")
    return found


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 10.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(check: Callable[[], bool], timeout: float, what: str, server: Server | None = None) -> None:
    """Poll check() until it is true; raise with the server's log when it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.process.poll() is not None:
            raise RuntimeError(f"{what}: process exited early\n{server.log_tail()}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}\n{server.log_tail() if server else ''}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


def start(name: str, argv: Sequence[str], port: int, log_dir: Path, ready: Callable[[], bool],
          timeout: float = 60.0, env: dict[str, str] | None = None) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    server = Server(name, port, proc, log_path)
    try:
        wait_until(ready, timeout, f"{name} on port {port}", server)
    except Exception:
        server.stop()
        raise
    return server


def start_secantus(log_dir: Path, port: int | None = None, extra_args: Sequence[str] = (),
                   ttl_sweep: bool = False) -> Server:
    """Start SecantusDB in memory. Its TTL sweeper is off unless asked for: the sample data's TTL index
    would otherwise delete documents between a restore and the test's read-back."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    config = log_dir / f"secantusd-{port}.toml"
    config.write_text(f"[storage]\nttl_sweep_seconds = {60 if ttl_sweep else 0}\n")
    argv = [find_tool("secantusd-py"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", ":memory:", "--log-level", "WARNING", *extra_args]
    return start("secantusdb", argv, port, log_dir, lambda: port_open(port), timeout=90)


def start_azurite(log_dir: Path, data_dir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [find_tool("azurite-blob"), "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--location", str(data_dir), "--silent", "--skipApiVersionCheck", "--loose"]
    server = start("azurite", argv, port, log_dir, lambda: port_open(port), timeout=60)
    server.extra["connection_string"] = azurite_connection_string(port)
    return server


def azurite_connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")


def start_pushgateway(log_dir: Path, port: int | None = None, extra_args: Sequence[str] = ()) -> Server:
    port = port or free_port()
    argv = [find_tool("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}",
            "--persistence.file=", *extra_args]
    return start("pushgateway", argv, port, log_dir, lambda: port_open(port), timeout=30)
