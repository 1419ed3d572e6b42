"""The demo stack: SecantusDB with the sample dataset, Azurite, and `backupctl daemon` on a 1-minute plan."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backup_exporter.restore.native import restore_archive  # noqa: E402
from tests import servers  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "mongodump-100.8.0-sample.archive.gz"
TOKEN = "demo-token"  # noqa: S105 - the demo's own local API token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="wait for the first backup, print metrics, exit")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_METRICS_PORT", "9868")))
    args = parser.parse_args()

    work = REPO / ".cache" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    started: list[servers.Server] = []
    daemon: subprocess.Popen[bytes] | None = None

    def stop_all(*_: object) -> None:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
        for server in reversed(started):
            server.stop(grace=2)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print("==> starting SecantusDB (MongoDB wire protocol) ...", flush=True)
        mongo = servers.start_secantus(logs, ttl_sweep=True)  # like a real mongod: TTL indexes expire data
        started.append(mongo)
        uri = f"mongodb://{mongo.address}/?directConnection=true"
        print("==> loading the sample dataset (3 databases, 5 collections, 10,800 documents) ...", flush=True)
        with open(SAMPLE, "rb") as f:
            summary = restore_archive(f, uri)
        print(f"    {summary.documents} documents loaded", flush=True)
        print("==> starting Azurite (Azure Blob Storage emulator) ...", flush=True)
        azurite = servers.start_azurite(logs, work / f"azurite-{os.getpid()}")
        started.append(azurite)
        config = work / "backup.yml"
        config.write_text(f"""# Written by scripts/demo
storage:
  type: azure
  container: demo-backups
  connection_string: ${{DEMO_AZURE_CONNECTION_STRING}}
  create_container: true
server:
  listen: 127.0.0.1:{args.port}
  api_token: {TOKEN}
plans:
  demo:
    mongodb_uri: ${{DEMO_MONGODB_URI}}
    schedule: "* * * * *"
    prefix: demo
    retention:
      keep_last: 5
""")
        env = {**os.environ, "DEMO_AZURE_CONNECTION_STRING": azurite.extra["connection_string"],
               "DEMO_MONGODB_URI": uri}
        daemon = subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", "daemon", "--config", str(config)],
                                  env=env)
        base = f"http://127.0.0.1:{args.port}"
        deadline = time.monotonic() + 30
        while not servers.http_ok(f"{base}/healthz"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                print(f"demo: the daemon did not start (see the line above); if port {args.port} is taken, "
                      "run scripts/demo --port PORT", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"""
==> the daemon is running: plan 'demo' backs up every minute into Azurite
    metrics:     {base}/metrics
    health:      {base}/healthz   readiness: {base}/readyz
    status:      {base}/api/v1/status
    run now:     curl -X POST -H 'Authorization: Bearer {TOKEN}' {base}/api/v1/plans/demo/run
    CLI:         DEMO_AZURE_CONNECTION_STRING='{azurite.extra["connection_string"]}' \\
                 DEMO_MONGODB_URI='{uri}' .venv/bin/backupctl status --config {config}
""", flush=True)
        if not args.check:
            print("    Ctrl-C to stop.", flush=True)
            while daemon.poll() is None:
                time.sleep(1)
            return daemon.returncode or 0
        # --check: trigger a run now rather than wait for the minute, then show the scrape.
        request = urllib.request.Request(f"{base}/api/v1/plans/demo/run", data=b"", method="POST",  # noqa: S310
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310

        def succeeded() -> bool:
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:  # noqa: S310
                text = r.read().decode()
            return 'backup_runs_total{plan="demo",result="success"} 1.0' in text

        servers.wait_until(succeeded, 120, "the first demo backup")
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:  # noqa: S310
            for line in r.read().decode().splitlines():
                if line.startswith("backup_"):
                    print(line)
        print("==> demo check passed: the first backup succeeded", flush=True)
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
