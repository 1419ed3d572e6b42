"""`backupctl run-now --daemon URL`: ask a running daemon to run a plan, then wait for the result."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from backup_exporter.core.errors import BackupError, ExitCode, UsageError

# How long a daemon may stay unreachable while a run is awaited (a restart) before run-now gives up (exit 69).
RECONNECT_SECONDS = 30.0


def _request(url: str, method: str, token: str | None, timeout: float = 10) -> tuple[int, Any]:
    """Return (HTTP status, parsed JSON body or None). Raises BackupError (UNAVAILABLE) when the daemon
    cannot be reached or a 2xx answer is not JSON (the URL is not a backupctl daemon)."""
    base = url.split("/api/")[0]
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - operator's URL
            code, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackupError(f"daemon at {base} is unreachable: {reason}", ExitCode.UNAVAILABLE) from None
    try:
        return code, json.loads(body or b"null")
    except ValueError:
        raise BackupError(f"{url} answered HTTP {code} without JSON: is {base} a backupctl daemon?",
                          ExitCode.UNAVAILABLE) from None


def _object(body: Any, what: str, base: str) -> dict[str, Any]:
    """Return body when it is a JSON object. Raises BackupError (UNAVAILABLE) naming `what` otherwise."""
    if not isinstance(body, dict):
        raise BackupError(f"{base}: unexpected answer to {what}: is it a backupctl daemon?", ExitCode.UNAVAILABLE)
    return body


def run_via_daemon(base_url: str, plan: str | None, *, poll_seconds: float = 1.0, timeout: float | None = None) -> int:
    """Start a run of `plan` in the daemon, wait for it, print its result; return the run's exit code.

    Raises BackupError: UNAVAILABLE when the daemon cannot be reached, refuses to start the run (shutdown),
    or restarted (or stayed away RECONNECT_SECONDS) while the run went on, so its result is unknown here;
    LOCKED when the plan is already running; TIMEOUT after `timeout` seconds."""
    try:
        parts = urllib.parse.urlsplit(base_url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        parts, hostname = urllib.parse.urlsplit(""), None
    if "@" in parts.netloc:
        # Credentials in argv are visible in `ps`; the API authenticates with the bearer token anyway.
        raise UsageError("--daemon: the URL may not hold credentials (visible in the process list); the token "
                         "comes from BACKUP_API_TOKEN")
    if parts.scheme not in ("http", "https") or not hostname:
        raise UsageError(f"--daemon '{base_url}' is not an http(s) URL such as http://127.0.0.1:9868")
    token = os.environ.get("BACKUP_API_TOKEN")
    if not token:
        raise UsageError("--daemon needs the daemon's API token in BACKUP_API_TOKEN")
    base = base_url.rstrip("/")
    if plan is None:
        code, status = _request(f"{base}/api/v1/status", "GET", token)
        if code != 200:
            raise BackupError(f"{base}/api/v1/status answered HTTP {code}", ExitCode.UNAVAILABLE)
        plans = list(_object(status, "/api/v1/status", base).get("plans", {}))
        if len(plans) != 1:
            raise UsageError(f"the daemon has several plans ({', '.join(plans)}): choose one with --plan")
        plan = plans[0]
    code, body = _request(f"{base}/api/v1/plans/{plan}/run", "POST", token)
    if code == 401:
        raise UsageError("the daemon refused the API token (BACKUP_API_TOKEN)")
    if code == 503:
        message = body.get("error", "unavailable") if isinstance(body, dict) else "unavailable"
        raise BackupError(f"the daemon did not start the run: {message}", ExitCode.UNAVAILABLE)
    if code == 409:
        raise BackupError(f"plan '{plan}' is already running in the daemon", ExitCode.LOCKED)
    if code != 202:
        message = (body or {}).get("error", f"HTTP {code}") if isinstance(body, dict) else f"HTTP {code}"
        raise BackupError(f"the daemon did not start the run: {message}", ExitCode.USAGE)
    run_id = _object(body, "the run request", base).get("id")
    deadline = None if timeout is None else time.monotonic() + timeout
    last_answer = time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        time.sleep(poll_seconds)
        try:
            _, status = _request(f"{base}/api/v1/status", "GET", token)
        except BackupError as exc:
            # A daemon being restarted (rolling update, kill -9 and restart) is away for a few seconds: keep
            # asking, so that the outcome is "restarted" rather than a guess.
            if time.monotonic() - last_answer < RECONNECT_SECONDS:
                continue
            raise BackupError(f"{exc.message} while run {run_id} of plan '{plan}' was going; its result is "
                              f"unknown here (see `backupctl status --plan {plan}`)", ExitCode.UNAVAILABLE) from None
        last_answer = time.monotonic()
        runs = _object(status, "/api/v1/status", base).get("runs", [])
        run = next((r for r in runs if isinstance(r, dict) and r.get("id") == run_id), None)
        if run is None:
            # Runs live in the daemon's memory: a daemon that restarted has lost this one (stopped with it).
            raise BackupError(f"the daemon at {base} restarted while run {run_id} of plan '{plan}' was going; "
                              f"its result is unknown here (see `backupctl status --plan {plan}`)",
                              ExitCode.UNAVAILABLE)
        if run.get("state") == "finished":
            if run["exit_code"] == 0:
                print(f"{run['name']}\t{run['size']}\t{run['sha256']}")
            else:
                print(f"backupctl: plan '{plan}': {run['message']}", file=sys.stderr)
            return int(run["exit_code"])
    raise BackupError(f"timed out waiting for run {run_id}", ExitCode.TIMEOUT)
