"""scripts/demo, the README's first command, really brings up the stack and makes a backup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import servers

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_makes_a_first_backup_and_serves_every_metric() -> None:
    port = servers.free_port()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--check", "--port", str(port)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert f"http://127.0.0.1:{port}/metrics" in out
    for name in ("backup_last_success_timestamp_seconds", "backup_last_exit_code",
                 "backup_last_attempt_timestamp_seconds", "backup_last_duration_seconds", "backup_last_size_bytes",
                 "backup_in_progress",
                 "backup_runs_total", "backup_next_run_timestamp_seconds", "backup_uploaded_bytes_total",
                 "backup_exporter_build_info"):
        assert f"{name}{{" in out, f"{name} missing from the demo's scrape"
    assert 'backup_last_exit_code{plan="demo"} 0.0' in out
    assert "10800 documents loaded" in out
