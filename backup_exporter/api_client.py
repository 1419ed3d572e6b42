"""`backupctl run-now --daemon URL`: ask a running daemon to run a plan, then wait for the result."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from backup_exporter.errors import BackupError, ExitCode, UsageError


def _request(url: str, method: str, token: str | None, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - operator's URL
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackupError(f"daemon at {url.split('/api/')[0]} is unreachable: {reason}", ExitCode.UNAVAILABLE) from None


def run_via_daemon(base_url: str, plan: str | None, *, poll_seconds: float = 1.0, timeout: float | None = None) -> int:
    """Start a run of `plan` in the daemon, wait for it, print its result; return the run's exit code."""
    if not base_url.startswith(("http://", "https://")):
        raise UsageError(f"--daemon '{base_url}' is not an http(s) URL")
    token = os.environ.get("BACKUP_API_TOKEN")
    if not token:
        raise UsageError("--daemon needs the daemon's API token in BACKUP_API_TOKEN")
    base = base_url.rstrip("/")
    if plan is None:
        _, status = _request(f"{base}/api/v1/status", "GET", token)
        plans = list((status or {}).get("plans", {}))
        if len(plans) != 1:
            raise UsageError(f"the daemon has several plans ({', '.join(plans)}): choose one with --plan")
        plan = plans[0]
    code, body = _request(f"{base}/api/v1/plans/{plan}/run", "POST", token)
    if code == 401:
        raise UsageError("the daemon refused the API token (BACKUP_API_TOKEN)")
    if code == 409:
        raise BackupError(f"plan '{plan}' is already running in the daemon", ExitCode.LOCKED)
    if code != 202:
        message = (body or {}).get("error", f"HTTP {code}") if isinstance(body, dict) else f"HTTP {code}"
        raise BackupError(f"the daemon did not start the run: {message}", ExitCode.USAGE)
    run_id = body["id"]
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        time.sleep(poll_seconds)
        _, status = _request(f"{base}/api/v1/status", "GET", token)
        run = next((r for r in (status or {}).get("runs", []) if r.get("id") == run_id), None)
        if run is None:
            raise BackupError(f"the daemon forgot run {run_id} (restarted?)", ExitCode.SOFTWARE)
        if run.get("state") == "finished":
            if run["exit_code"] == 0:
                print(f"{run['name']}\t{run['size']}\t{run['sha256']}")
            else:
                print(f"backupctl: plan '{plan}': {run['message']}", file=sys.stderr)
            return int(run["exit_code"])
    raise BackupError(f"timed out waiting for run {run_id}", ExitCode.SOFTWARE)
