"""A real monitoring stack for end-to-end tests: the daemon, Prometheus, Alertmanager, a Pushgateway and a
webhook server standing in for Slack, e-mail and PagerDuty.

The Prometheus and Alertmanager configurations are derived from the shipped files in deploy/, changing only
what a test has to change: durations (rule `for:`, evaluation, scrape and grouping intervals), addresses
(scrape targets, the Alertmanager, receivers pointed at the local webhook server) and secrets (global SMTP
settings dropped). Alert expressions, labels, annotations, the route tree, matchers, `continue`, grouping
and inhibition are used exactly as shipped.

Every process listens on 127.0.0.1 on a free port and keeps its data in a temporary directory; stop() ends
all of them. tests/servers.py has the generic start helpers; this module adds Prometheus and Alertmanager.
"""

from __future__ import annotations

import copy
import json
import shutil
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import servers
from tests.cli_helpers import FAKE_MONGODUMP, base_env
from tests.daemon_helpers import DaemonProcess, post, start_daemon

REPO = servers.REPO
RULES = REPO / "deploy" / "prometheus" / "backup-rules.yml"
PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
AM_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
AM_TEMPLATES = REPO / "deploy" / "alertmanager" / "templates"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "backups.json"

API_TOKEN = "monitoring-e2e-token"
# Scrape jobs of the shipped prometheus.yml: the sidecar (daemon) and the Pushgateway.
DAEMON_JOB = "mongodb-backup"
PUSHGATEWAY_JOB = "backup-pushgateway"
# The shared stack's daemon plans and the fake mongodump mode each starts with. Tests switch a plan's mode
# with MonitoringStack.set_mode() and trigger runs with MonitoringStack.run(); every test uses its own plans.
PLANS = {
    "nightly": "fail",   # test_alerting_e2e: fails, then succeeds
    "hourly": "ok",      # test_dashboard_queries: a successful backup
    "weekly": "fail",    # test_dashboard_queries: a failing plan whose BackupJobFailed fires
}
SCRAPE_INTERVAL = "1s"
RULE_FOR = "1s"  # every rule's `for:` (pending for one evaluation, then firing)


# --- derived configurations -------------------------------------------------------------------------------

def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def shortened_rules(rules: Mapping[str, Any], for_: str = RULE_FOR, interval: str = SCRAPE_INTERVAL) -> dict[str, Any]:
    """The rule file with every `for:` set to `for_` and every group evaluated every `interval`; else as is."""
    doc: dict[str, Any] = copy.deepcopy(dict(rules))
    for group in doc["groups"]:
        group["interval"] = interval
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    return doc


def prometheus_test_config(shipped: Mapping[str, Any], rule_file: Path, targets: Mapping[str, list[str]],
                           alertmanager: str) -> dict[str, Any]:
    """The shipped prometheus.yml with 1 s intervals, our rule file, our Alertmanager and scrape targets.

    `targets` maps shipped scrape job names to addresses; shipped jobs not in it are left out. A name that is
    not a shipped job is an error, so renaming a job in deploy/ breaks the test visibly instead of silently.
    """
    cfg: dict[str, Any] = copy.deepcopy(dict(shipped))
    cfg["global"] = {**cfg.get("global", {}), "scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                     "evaluation_interval": SCRAPE_INTERVAL}
    cfg["rule_files"] = [str(rule_file)]
    managers = cfg.get("alerting", {}).get("alertmanagers") or [{}]
    cfg["alerting"] = {"alertmanagers": [{**managers[0], "static_configs": [{"targets": [alertmanager]}]}]}
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    unknown = set(targets) - set(jobs)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not scrape jobs of {PROM_CONFIG} (jobs: {sorted(jobs)})")
    cfg["scrape_configs"] = [{**jobs[name], "static_configs": [{"targets": addresses}]}
                             for name, addresses in targets.items()]
    return cfg


def _shorten_route(route: dict[str, Any], root: bool) -> None:
    for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1m")):
        if root or key in route:
            route[key] = value
    for child in route.get("routes") or []:
        _shorten_route(child, root=False)


def alertmanager_test_config(shipped: Mapping[str, Any], webhook_base: str) -> dict[str, Any]:
    """The shipped alertmanager.yml with short grouping times and every receiver a webhook.

    Receiver NAME posts to `webhook_base/NAME`, so a test sees which receivers an alert reached. The route
    tree (matchers, continue, group_by), inhibit rules and templates stay; global settings that need secrets
    (SMTP, Slack, PagerDuty ...) go: only resolve_timeout is kept.
    """
    cfg: dict[str, Any] = copy.deepcopy(dict(shipped))
    cfg["global"] = {k: v for k, v in (cfg.get("global") or {}).items() if k == "resolve_timeout"}
    _shorten_route(cfg["route"], root=True)
    cfg["receivers"] = [{"name": r["name"],
                         "webhook_configs": [{"url": f"{webhook_base}/{r['name']}", "send_resolved": True}]}
                        for r in cfg["receivers"]]
    return cfg


# --- webhook receiver -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Notification:
    receiver: str          # the webhook path, i.e. the Alertmanager receiver's name
    payload: dict[str, Any]


@dataclass(frozen=True)
class ReceivedAlert:
    receiver: str
    status: str            # "firing" or "resolved"
    labels: dict[str, str]
    annotations: dict[str, str]


class WebhookRecorder:
    """An HTTP server in a thread recording every JSON document POSTed to it (Alertmanager's webhooks)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver = urllib.parse.urlparse(self.path).path.strip("/")
                with recorder._lock:
                    recorder.notifications.append(Notification(receiver, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def alerts(self, **labels: str) -> list[ReceivedAlert]:
        """Every alert of every notification so far whose labels include `labels`, in arrival order."""
        with self._lock:
            notifications = list(self.notifications)
        return [ReceivedAlert(n.receiver, alert["status"], alert["labels"], alert.get("annotations", {}))
                for n in notifications for alert in n.payload.get("alerts", [])
                if all(alert["labels"].get(k) == v for k, v in labels.items())]

    def receivers(self, status: str, **labels: str) -> set[str]:
        return {a.receiver for a in self.alerts(**labels) if a.status == status}

    def wait_for_receivers(self, expected: Iterable[str], status: str, timeout: float, **labels: str) -> None:
        """Wait until an alert with `labels` in state `status` has reached every receiver in `expected`."""
        want = set(expected)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want <= self.receivers(status, **labels):
                return
            time.sleep(0.1)
        got = [(a.receiver, a.status, a.labels) for a in self.alerts()]
        reached = sorted(self.receivers(status, **labels))
        raise AssertionError(f"after {timeout:.0f}s, {status} {labels} reached {reached}, not all of {sorted(want)}; "
                             f"everything received: {got}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --- Prometheus and Alertmanager --------------------------------------------------------------------------

class PrometheusError(AssertionError):
    pass


@dataclass
class Prometheus:
    server: servers.Server

    @property
    def url(self) -> str:
        return f"http://{self.server.address}"

    def api(self, path: str, **params: str | float) -> Any:
        """GET /api/v1/PATH; return `data`, raising PrometheusError for any error (with Prometheus's message)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result as a list of series (a scalar becomes one series without labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]  # type: ignore[no-any-return]

    def query_range(self, expr: str, start: float, end: float, step: str = SCRAPE_INTERVAL) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]  # type: ignore[no-any-return]

    def has(self, expr: str) -> bool:
        return bool(self.query(expr))

    def wait_for(self, expr: str, timeout: float, what: str) -> None:
        """Wait until the instant query `expr` returns at least one series."""
        servers.wait_until(lambda: self.has(expr), timeout, f"Prometheus: {what} ({expr})", self.server)


def start_prometheus(work_dir: Path, log_dir: Path, rules: Mapping[str, Any], targets: Mapping[str, list[str]],
                     alertmanager: str, port: int | None = None) -> Prometheus:
    """Start Prometheus with the shipped configuration (see prometheus_test_config) and `rules`."""
    port = port or servers.free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    rule_file = work_dir / "backup-rules.yml"
    rule_file.write_text(yaml.safe_dump(dict(rules), sort_keys=False))
    config = work_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_test_config(load_yaml(PROM_CONFIG), rule_file, targets, alertmanager),
                                     sort_keys=False))
    argv = [servers.find_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s", "--log.level=warn"]
    server = servers.start("prometheus", argv, port, log_dir, lambda: servers.http_ok(f"http://127.0.0.1:{port}/-/ready"),
                           timeout=60)
    return Prometheus(server)


def start_alertmanager(work_dir: Path, log_dir: Path, webhook_base: str, port: int | None = None) -> servers.Server:
    """Start Alertmanager with the shipped configuration (see alertmanager_test_config), clustering off."""
    port = port or servers.free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(AM_TEMPLATES, work_dir / AM_TEMPLATES.name, dirs_exist_ok=True)  # templates/*.tmpl, relative
    config = work_dir / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_test_config(load_yaml(AM_CONFIG), webhook_base), sort_keys=False))
    binary = "prometheus-alertmanager" if shutil.which("prometheus-alertmanager") else "alertmanager"
    argv = [servers.find_tool(binary), f"--config.file={config}", f"--storage.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"]
    return servers.start("alertmanager", argv, port, log_dir,
                         lambda: servers.http_ok(f"http://127.0.0.1:{port}/-/ready"), timeout=60)


# --- the daemon -------------------------------------------------------------------------------------------

def write_mode_wrapper(path: Path, mode_file: Path) -> Path:
    """An executable that runs tests/tools/fake-mongodump in the mode named in `mode_file` at each run.

    The daemon's environment is fixed at start, so each plan gets a wrapper reading its own mode file: a
    test switches a plan from failing to succeeding by rewriting the file. `exec` keeps the inherited
    --config pipe descriptor open for the fake tool.
    """
    path.write_text(f"#!/bin/sh\nFAKE_MONGODUMP_MODE=\"$(cat '{mode_file}')\"\nexport FAKE_MONGODUMP_MODE\n"
                    f"exec '{FAKE_MONGODUMP}' \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_daemon_config(path: Path, store: Path, wrappers: Mapping[str, Path]) -> Path:
    store.mkdir(parents=True, exist_ok=True)
    plans = "".join(f"""  {name}:
    mongodb_uri: mongodb://127.0.0.1:1/
    schedule: "0 3 * * *"
    engine: mongodump
    mongodump_path: {wrapper}
""" for name, wrapper in wrappers.items())
    path.write_text(f"""storage:
  type: local
  path: {store}
server:
  api_token: {API_TOKEN}
  status_refresh: 1s
  grace_period: 3s
plans:
{plans}""")
    return path


# --- the stack --------------------------------------------------------------------------------------------

@dataclass
class MonitoringStack:
    work_dir: Path
    webhook: WebhookRecorder
    alertmanager: servers.Server
    pushgateway: servers.Server
    daemon: DaemonProcess
    prometheus: Prometheus
    started: float
    mode_files: dict[str, Path] = field(default_factory=dict)

    def set_mode(self, plan: str, mode: str) -> None:
        """The fake mongodump mode (ok, fail, ...) of the plan's next runs."""
        self.mode_files[plan].write_text(mode)

    def run(self, plan: str, timeout: float = 30) -> None:
        """Start a run of `plan` through the daemon's API and wait until it finished."""
        before = self._finished_runs(plan)
        code, body = post(f"{self.daemon.url}/api/v1/plans/{plan}/run", API_TOKEN)
        assert code == 202, (code, body)
        servers.wait_until(lambda: self._finished_runs(plan) > before, timeout, f"the run of plan {plan} to finish")

    def _finished_runs(self, plan: str) -> float:
        return sum(self.daemon.value("backup_runs_total", plan=plan, result=r) or 0 for r in ("success", "failure"))

    def logs(self) -> str:
        parts = [f"--- {s.name}\n{s.log_tail()}" for s in (self.prometheus.server, self.alertmanager, self.pushgateway)]
        return "\n".join([*parts, f"--- daemon\n{self.daemon.log()[-3000:]}"])

    def stop(self) -> None:
        for stop in (self.prometheus.server.stop, self.daemon.stop, self.alertmanager.stop, self.pushgateway.stop,
                     self.webhook.close):
            try:
                stop()
            except Exception:  # stop the others whatever happens to one
                pass


def start_monitoring_stack(work_dir: Path, plans: Mapping[str, str] = PLANS) -> MonitoringStack:
    """Webhook server, Alertmanager, Pushgateway, the daemon with `plans` (name -> initial mode), Prometheus."""
    logs = work_dir / "logs"
    started: list[Callable[[], object]] = []
    try:
        webhook = WebhookRecorder()
        started.append(webhook.close)
        alertmanager = start_alertmanager(work_dir / "alertmanager", logs, webhook.url)
        started.append(alertmanager.stop)
        pushgateway = servers.start_pushgateway(logs)
        started.append(pushgateway.stop)
        mode_files, wrappers = {}, {}
        for plan, mode in plans.items():
            mode_files[plan] = work_dir / f"{plan}.mode"
            mode_files[plan].write_text(mode)
            wrappers[plan] = write_mode_wrapper(work_dir / f"mongodump-{plan}", mode_files[plan])
        config = write_daemon_config(work_dir / "backupctl.yml", work_dir / "store", wrappers)
        daemon = start_daemon(config, base_env(), logs)
        started.append(daemon.stop)
        prometheus = start_prometheus(
            work_dir / "prometheus", logs, shortened_rules(load_yaml(RULES)),
            {DAEMON_JOB: [f"127.0.0.1:{daemon.port}"], PUSHGATEWAY_JOB: [pushgateway.address]},
            alertmanager.address)
        started.append(prometheus.server.stop)
        stack = MonitoringStack(work_dir, webhook, alertmanager, pushgateway, daemon, prometheus, time.time(),
                                mode_files)
        prometheus.wait_for(f'up{{job="{DAEMON_JOB}"}} == 1', 30, "the first scrape of the daemon")
        prometheus.wait_for(f'up{{job="{PUSHGATEWAY_JOB}"}} == 1', 30, "the first scrape of the Pushgateway")
        return stack
    except BaseException:
        for stop in reversed(started):
            try:
                stop()
            except Exception:
                pass
        raise


_STACK = pytest.StashKey[MonitoringStack]()


def shared_stack(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> MonitoringStack:
    """The session's one monitoring stack, started on first use and stopped when the session ends.

    Shared by tests/test_alerting_e2e.py and tests/test_dashboard_queries.py (a fixture imported into two
    modules would start one per module); each test works on its own plans, see PLANS.
    """
    stack = config.stash.get(_STACK, None)
    if stack is None:
        stack = start_monitoring_stack(tmp_path_factory.mktemp("monitoring"))
        config.stash[_STACK] = stack
        config.add_cleanup(stack.stop)
    return stack
