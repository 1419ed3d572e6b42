"""Pushgateway and textfile output for one-shot runs (cron, Kubernetes CronJob).

Gauges only, same names as the daemon, grouped by ``job`` (default ``mongodb-backup``), ``plan`` and any extra
grouping labels. A push uses POST (push-add), which replaces only the metric names it carries, and the
success-describing gauges (``backup_last_success_timestamp_seconds``, ``backup_last_size_bytes``) always come
from the plan's status record in storage, so a failed run never erases what the last success published:

* stored record readable, with a success: those values are pushed again (unchanged by a failure);
* stored record readable, no success ever: 0 and 0, as documented ("0 if none ever succeeded"), so
  ``BackupNeverSucceeded`` can fire;
* stored record unreadable (storage down): the two gauges are left out of the push, and the gateway keeps
  whatever an earlier push gave them. The textfile, which is rewritten whole, keeps them from its own
  previous content instead.

A run skipped because another run holds the plan's lock publishes the stored record as it is (like the
daemon, which does not change ``backup_last_exit_code`` for a skipped run); the command still exits 75.

Publishing never raises and never masks the backup's result: ``publish`` returns 0 or PUSH (76), and the
caller returns the run's own exit code whenever that is non-zero.
"""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import pushadd_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from backup_exporter.config import PlanConfig, PushConfig
from backup_exporter.core import naming, status
from backup_exporter.core.errors import BackupError, ExitCode, PushFailed
from backup_exporter.core.plan_state import PlanStates
from backup_exporter.core.redact import redact
from backup_exporter.operations.run import RunOutcome
from backup_exporter.repository import records
from backup_exporter.serve.metrics import metrics_registry
from backup_exporter.storage.base import Storage
from backup_exporter.system.files import write_atomically
from backup_exporter.system.logs import event, plan_logger

log = logging.getLogger(__name__)

# Gauges that describe the last *success*: taken from the stored status record, never from a failed run.
SUCCESS_GAUGES = ("backup_last_success_timestamp_seconds", "backup_last_size_bytes")
# Gauges that describe the last finished attempt: left out when no attempt is known (a skipped first run).
ATTEMPT_GAUGES = ("backup_last_exit_code", "backup_last_attempt_timestamp_seconds", "backup_last_duration_seconds")
# Gauges a one-shot run cannot know (the daemon's schedule, storage totals, restore drills): not pushed, so a
# push never overwrites what another process published for them.
NOT_PUSHED = ("backup_next_run_timestamp_seconds", "backup_in_progress", "backup_stored_backups",
              "backup_stored_bytes", "backup_last_restore_check_timestamp_seconds",
              "backup_last_restore_check_success")
# Labels backupctl sets itself.
RESERVED_LABELS = ("job", "plan", "instance")

Handler = Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]


# --- metrics ----------------------------------------------------------------------------------------------

def build_registry(plan: PlanConfig, outcome: RunOutcome, stored: status.PlanStatus | None, *,
                   previous_success: Mapping[str, float] | None = None) -> CollectorRegistry:
    """Return a registry holding the plan's gauges after this outcome (no counters).

    `stored` is the plan's status record read back from storage, or None when it could not be read. The
    success gauges come from it (0 when it shows no success ever); when it is None they come from
    `previous_success` (metric name -> value) if given, else they are left out.
    """
    record = stored if stored is not None else status.PlanStatus(plan.name)
    if outcome.result != "skipped":
        record = record.recorded(status.Attempt(
            started=outcome.started, finished=outcome.finished, exit_code=outcome.exit_code,
            result=outcome.result, message=outcome.message, name=outcome.name, size=outcome.size,
            sha256=outcome.sha256, engine=outcome.engine, elapsed=outcome.elapsed))
    use_previous = record.last_success is None and stored is None and bool(previous_success)
    exclude = set(NOT_PUSHED)
    if record.last_success is None and stored is None and not use_previous:
        exclude.update(SUCCESS_GAUGES)
    if record.last_attempt is None:
        exclude.update(ATTEMPT_GAUGES)
    state = PlanStates([plan.name])
    state.apply_status(record)
    if use_previous and previous_success is not None:
        state.set_last_success(plan.name, previous_success.get(SUCCESS_GAUGES[0], 0.0),
                               int(previous_success.get(SUCCESS_GAUGES[1], 0.0)))
    state.set_max_age(plan.name, plan.max_age_seconds)
    if outcome.retention_ok is not None:
        state.set_retention(plan.name, outcome.finished, outcome.retention_ok)
    return metrics_registry(state, counters=False, exclude=exclude)


# --- Pushgateway ------------------------------------------------------------------------------------------

def push(cfg: PushConfig, plan: PlanConfig, registry: CollectorRegistry) -> None:
    """Push-add the registry under job + plan (+ extra grouping keys). Raises PushFailed (no secrets)."""
    assert cfg.url is not None
    grouping = {**cfg.grouping_key, "plan": plan.name}
    where = f"Pushgateway {safe_url(cfg.url)}"
    try:
        pushadd_to_gateway(cfg.url, job=cfg.job, registry=registry, grouping_key=grouping,
                           timeout=cfg.timeout_seconds, handler=_handler(cfg))
    except BackupError:
        raise
    except Exception as exc:
        raise PushFailed(f"push to {where} failed: {_hide(_reason(exc, cfg), cfg)}") from None


def _handler(cfg: PushConfig) -> Handler:
    """Return a prometheus_client push handler with basic auth, CA bundle, client certificate and timeout."""
    try:
        context = _ssl_context(cfg)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (cfg.ca_file, cfg.cert_file, cfg.key_file) if f)
        raise PushFailed(f"push to Pushgateway {safe_url(cfg.url or '')} failed: cannot load the TLS files "
                         f"({files}): {getattr(exc, 'strerror', None) or exc}") from None
    handlers: list[urllib.request.BaseHandler] = []
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    authorization = None
    if cfg.username is not None:
        token = base64.b64encode(f"{cfg.username}:{cfg.password or ''}".encode()).decode("ascii")
        authorization = f"Basic {token}"

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        def send() -> None:
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - configured URL
            for key, value in headers:
                request.add_header(key, value)
            if authorization is not None:
                # Unredirected: the credentials are never forwarded to where a redirect points.
                request.add_unredirected_header("Authorization", authorization)
            with opener.open(request, timeout=timeout) as response:
                response.read()

        return send

    return handler


def _ssl_context(cfg: PushConfig) -> ssl.SSLContext | None:
    if not (cfg.ca_file or cfg.cert_file):
        return None
    context = ssl.create_default_context(cafile=cfg.ca_file)
    if cfg.cert_file and cfg.key_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    return context


def _reason(exc: BaseException, cfg: PushConfig) -> str:
    """Return why a push failed, in a few words."""
    if isinstance(exc, urllib.error.HTTPError):
        return _http_reason(exc, cfg)
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"no answer within {cfg.timeout_seconds:g} s (timed out)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message} (CA bundle: --push-ca-file)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the Pushgateway running and the URL right?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError):
        text = f"TLS error: {exc.reason or exc}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if (cfg.url or "").startswith("https://") and isinstance(exc, ssl.SSLError | ConnectionResetError):
        # A TLS 1.3 server refusing the client's certificate shows only as an alert or a closed connection.
        text += (" (did the Pushgateway refuse the client certificate?)" if cfg.cert_file else
                 " (does the Pushgateway require a client certificate? --push-cert-file and --push-key-file)")
    return text


def _http_reason(exc: urllib.error.HTTPError, cfg: PushConfig) -> str:
    try:
        body = exc.read(2000).decode("utf-8", "replace").strip()
    except Exception:
        body = ""
    text = f"HTTP {exc.code} {exc.reason}"
    if exc.code == 401:
        text += (" (check the basic-auth user and password)" if cfg.username is not None
                 else " (the Pushgateway requires basic auth: set --push-username and a password)")
    elif exc.code == 403:
        text += " (the credentials are not allowed to push)"
    if body:
        text += f": {' '.join(body.split())[:300]}"
    return text


def _hide(text: str, cfg: PushConfig) -> str:
    return redact(text, [cfg.password] if cfg.password else [])


def safe_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rsplit("@", 1)[-1]
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"


# --- textfile ---------------------------------------------------------------------------------------------

def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """Write the registry for node_exporter's textfile collector atomically (the temporary file's name does
    not end in .prom, so the collector ignores it). Raises PushFailed."""
    try:
        write_atomically(Path(path), generate_latest(registry), mode=0o644)
    except OSError as exc:
        raise PushFailed(f"cannot write textfile {path}: {exc.strerror or exc}") from None


def previous_success(path: str, plan: str) -> dict[str, float]:
    """Return the success gauges of `plan` found in an existing textfile (empty when none or unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in SUCCESS_GAUGES and sample.labels.get("plan") == plan:
                    found[sample.name] = sample.value
    except ValueError:
        return {}
    return found


# --- after a run ------------------------------------------------------------------------------------------

def publish(cfg: PushConfig, plan: PlanConfig, storage: Storage, outcome: RunOutcome) -> int:
    """Push and/or write the plan's metrics after a run; return 0, or PUSH (76) when publishing failed.

    Never raises. The backup's own result is never masked: the caller returns the run's exit code when it is
    non-zero, and a stored backup stays stored whatever happens here.
    """
    stored = _stored_status(plan, storage, outcome)
    plan_log = plan_logger(__name__, plan.name)
    code = 0
    for target, action in _targets(cfg, plan, outcome, stored):
        try:
            action()
            event(plan_log, logging.INFO, "published", "metrics published to %s", target)
        except Exception as exc:
            if isinstance(exc, BackupError):
                message = exc.message
            else:
                log.debug("publishing failed", exc_info=True)
                message = f"publishing to {target} failed: {type(exc).__name__}: {_hide(str(exc), cfg)}"
            kept = f"; the backup {outcome.name} is stored" if outcome.exit_code == 0 and outcome.name else ""
            event(plan_log, logging.ERROR, "publish_failed", "%s%s", message, kept, exit_code=int(ExitCode.PUSH))
            print(f"backupctl: {message}{kept}", file=sys.stderr)
            code = int(ExitCode.PUSH)
    return code


def _stored_status(plan: PlanConfig, storage: Storage, outcome: RunOutcome) -> status.PlanStatus | None:
    """Return the plan's status record read back from storage, or None when it cannot be trusted.

    An empty record is trusted ("never succeeded") only when the storage answers and the run did not fail on
    storage: a volume that is not mounted also reads as "no record", and must not erase the last success.
    """
    try:
        storage.ping()
        stored = records.load(storage, naming.status_name(plan.prefix, plan.name), plan.name)
    except Exception as exc:
        reason = exc.message if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
        log.warning("could not read the stored status of plan %s (%s): publishing this run's values only; "
                    "the last success's values are left as they were", plan.name, reason)
        return None
    if stored.last_success is None and outcome.exit_code == ExitCode.STORAGE:
        log.warning("the run of plan %s failed on storage: its last success is left as it was", plan.name)
        return None
    return stored


def _targets(cfg: PushConfig, plan: PlanConfig, outcome: RunOutcome,
             stored: status.PlanStatus | None) -> list[tuple[str, Callable[[], None]]]:
    targets: list[tuple[str, Callable[[], None]]] = []
    if cfg.url:
        url = cfg.url
        labels = ", ".join(f"{k}={v}" for k, v in {"job": cfg.job, "plan": plan.name, **cfg.grouping_key}.items())

        def do_push() -> None:
            push(cfg, plan, build_registry(plan, outcome, stored))

        targets.append((f"Pushgateway {safe_url(url)} ({labels})", do_push))
    if cfg.textfile:
        path = cfg.textfile

        def do_write() -> None:
            previous = previous_success(path, plan.name) if stored is None else None
            write_textfile(path, build_registry(plan, outcome, stored, previous_success=previous))

        targets.append((f"textfile {path}", do_write))
    return targets
