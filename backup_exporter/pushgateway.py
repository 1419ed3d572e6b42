"""Pushgateway and textfile output for one-shot runs (cron, Kubernetes CronJob).

Gauges only, same names as the daemon. A push uses POST (push-add), which replaces only the metric names it
carries: a failed run pushes its exit code and attempt time but leaves ``backup_last_success_timestamp_seconds``
and ``backup_last_size_bytes`` as the last success pushed them (or re-pushes them from the stored status).
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import basic_auth_handler, default_handler, pushadd_to_gateway

from backup_exporter import naming, status
from backup_exporter.config import PlanConfig, PushConfig
from backup_exporter.errors import BackupError, ExitCode, PushFailed, UsageError
from backup_exporter.metrics import BackupMetrics
from backup_exporter.runner import RunOutcome
from backup_exporter.storage.base import Storage

log = logging.getLogger(__name__)

# Gauges that describe the last *success*: never sent with a failure unless read back from the stored status.
SUCCESS_GAUGES = ("backup_last_success_timestamp_seconds", "backup_last_size_bytes")
# Gauges a one-shot run cannot know (the daemon's schedule, storage totals, restore drills): not pushed, so a
# push never overwrites what another process published for them.
NOT_PUSHED = ("backup_next_run_timestamp_seconds", "backup_in_progress", "backup_stored_backups",
              "backup_stored_bytes", "backup_last_restore_check_timestamp_seconds",
              "backup_last_restore_check_success")


def push_config_from_args(args: argparse.Namespace, base: PushConfig) -> PushConfig:
    """Return the push settings: command-line flags over the configuration (file or environment)."""
    grouping = dict(base.grouping_key)
    for item in args.grouping_key:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--grouping-key '{item}' is not KEY=VALUE")
        if key in ("job", "plan"):
            raise UsageError(f"--grouping-key '{key}' is set by backupctl (use --job for the job label)")
        grouping[key] = value
    password = base.password
    if args.push_password_file:
        try:
            password = Path(args.push_password_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"--push-password-file {args.push_password_file}: {exc.strerror}") from None
    cfg = replace(
        base,
        url=args.pushgateway or base.url,
        job=args.job or base.job,
        grouping_key=grouping,
        username=args.push_username or base.username,
        password=password,
        ca_file=args.push_ca_file or base.ca_file,
        cert_file=args.push_cert_file or base.cert_file,
        key_file=args.push_key_file or base.key_file,
        timeout_seconds=args.push_timeout or base.timeout_seconds,
        textfile=args.textfile or base.textfile,
    )
    if cfg.url and not cfg.url.startswith(("http://", "https://")):
        raise UsageError(f"--pushgateway '{cfg.url}' is not an http(s) URL")
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise UsageError("--push-cert-file and --push-key-file go together")
    return cfg


def build_registry(plan: PlanConfig, outcome: RunOutcome, stored: status.PlanStatus | None) -> CollectorRegistry:
    """Return a registry holding the plan's gauges for this outcome (no counters).

    Success-describing gauges are included only when known: from this run's success or the stored status.
    """
    attempt = status.Attempt(started=outcome.started, finished=outcome.finished, exit_code=outcome.exit_code,
                             result=outcome.result if outcome.result != "skipped" else status.FAILURE,
                             message=outcome.message, name=outcome.name, size=outcome.size)
    current = stored if stored is not None else status.PlanStatus(plan.name)
    record = current.recorded(attempt) if outcome.result != "skipped" else current
    exclude = set(NOT_PUSHED) | (set() if record.last_success is not None else set(SUCCESS_GAUGES))
    registry = CollectorRegistry()
    metrics = BackupMetrics(registry, [plan.name], counters=False, exclude=exclude)
    metrics.apply_status(record)
    metrics.last_exit_code.labels(plan.name).set(outcome.exit_code)
    metrics.max_age.labels(plan.name).set(plan.max_age_seconds)
    return registry


def _handler(cfg: PushConfig) -> Callable[..., Callable[[], None]]:
    """Return a prometheus_client push handler with basic auth, CA bundle, client certificate and timeout."""
    context: ssl.SSLContext | None = None
    if cfg.ca_file or cfg.cert_file:
        try:
            context = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.cert_file and cfg.key_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"Pushgateway TLS files: {exc}") from None

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        if cfg.username is not None:
            headers = [*headers, *_basic_auth_header(cfg.username, cfg.password or "")]
        if context is None:
            return default_handler(url, method, timeout, headers, data)

        def send() -> None:
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - configured URL
            for key, value in headers:
                request.add_header(key, value)
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
                if response.status >= 400:
                    raise OSError(f"error talking to pushgateway: {response.status}")

        return send

    return handler


def _basic_auth_header(username: str, password: str) -> list[tuple[str, str]]:
    captured: list[tuple[str, str]] = []

    def capture(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        captured.extend(headers)
        return lambda: None

    basic_auth_handler("", "", None, [], b"", username=username, password=password, handler=capture)()
    return captured


def push(cfg: PushConfig, plan: PlanConfig, registry: CollectorRegistry) -> None:
    """Push-add the registry under job + plan (+ extra grouping keys). Raises PushFailed (no secrets)."""
    assert cfg.url is not None
    grouping = {"plan": plan.name, **cfg.grouping_key}
    try:
        pushadd_to_gateway(cfg.url, job=cfg.job, registry=registry, grouping_key=grouping,
                           timeout=cfg.timeout_seconds, handler=_handler(cfg))
    except BackupError:
        raise
    except Exception as exc:
        reason = str(exc).replace(cfg.password or "\0", "***") if cfg.password else str(exc)
        raise PushFailed(f"push to Pushgateway {_safe_url(cfg.url)} failed: {reason}") from None


def _safe_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """Write the registry for node_exporter's textfile collector atomically. Raises PushFailed."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(generate_latest(registry))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise PushFailed(f"cannot write textfile {path}: {exc.strerror or exc}") from None


def publish(cfg: PushConfig, plan: PlanConfig, storage: Storage, outcome: RunOutcome) -> int:
    """Push and/or write the plan's metrics after a run; return 0, or PUSH when publishing failed.

    The backup's own result is never masked: the caller returns the run's exit code when it is non-zero.
    """
    stored: status.PlanStatus | None = None
    try:
        stored = status.load(storage, naming.status_name(plan.prefix, plan.name), plan.name)
    except BackupError as exc:
        log.warning("could not read the stored status of plan %s (%s): pushing this run's values only",
                    plan.name, exc.message)
    registry = build_registry(plan, outcome, stored)
    code = 0
    for target, action in _targets(cfg, plan, registry):
        try:
            action()
            log.info("metrics of plan %s written to %s", plan.name, target)
        except PushFailed as exc:
            log.error("%s", exc.message)
            print(f"backupctl: {exc.message}", file=sys.stderr)
            code = int(ExitCode.PUSH)
    return code


def _targets(cfg: PushConfig, plan: PlanConfig, registry: CollectorRegistry) -> list[tuple[str, Any]]:
    targets: list[tuple[str, Any]] = []
    if cfg.url:
        targets.append((f"Pushgateway {_safe_url(cfg.url)}", lambda: push(cfg, plan, registry)))
    if cfg.textfile:
        path = cfg.textfile
        targets.append((f"textfile {path}", lambda: write_textfile(path, registry)))
    return targets
