"""Static checks of the monitoring files: alert rules, their promtool tests, Alertmanager routing, the
example Prometheus config, the Grafana dashboard, and the README runbook anchors.

scripts/check-monitoring runs the tools (promtool, amtool); these tests check conventions the tools do not.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "backup-rules.yml"
RULE_TESTS = sorted((REPO / "deploy" / "prometheus" / "tests").glob("*.yml"))
PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
AM_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "backups.json"
README = REPO / "README.md"

RUNBOOK_BASE = "https://github.com/backup-exporter/backup_exporter/blob/main/README.md#"
ROUTING_LABEL = ("team", "ops-backups")
EXPECTED_ALERTS = {
    "BackupJobFailed": "critical",
    "BackupTooOld": "warning",
    "BackupNeverSucceeded": "warning",
    "BackupMetricsAbsent": "warning",
    "BackupExporterDown": "critical",
    "BackupRunTooLong": "warning",
    "BackupSizeDropped": "warning",
    "BackupPushgatewayStale": "warning",
    "BackupPushFailed": "warning",
    "BackupVerifyFailed": "warning",
    "BackupRetentionFailed": "warning",
}
# Alerts whose series have no plan label (the rest must name the plan in their description).
PLANLESS = {"BackupExporterDown", "BackupMetricsAbsent"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _yaml(RULES)["groups"] for r in g["rules"] if "alert" in r}


ALERTS = _alerts()


def test_alert_set_and_severities() -> None:
    assert {name: rule["labels"]["severity"] for name, rule in ALERTS.items()} == EXPECTED_ALERTS


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_alert_labels_and_annotations(name: str) -> None:
    rule = ALERTS[name]
    key, value = ROUTING_LABEL
    assert rule["labels"].get(key) == value
    ann = rule["annotations"]
    assert set(ann) >= {"summary", "description", "runbook_url"}
    assert ann["runbook_url"] == RUNBOOK_BASE + name.lower()
    assert ann["summary"].strip() and "\n" not in ann["summary"]
    if name not in PLANLESS:
        assert "$labels.plan" in ann["description"]
    # description states the value, a threshold or a queried figure (a time, a percentage), not just the name
    assert "$value" in ann["description"] or "| query" in ann["description"] or re.search(r"\d", ann["description"])


def test_rules_work_on_scraped_and_pushed_label_sets() -> None:
    # No rule may require an instance label: pushed series (honor_labels) have none.
    for name, rule in ALERTS.items():
        assert "instance" not in rule["expr"], name
    exprs = {name: rule["expr"] for name, rule in ALERTS.items()}
    assert 'job="mongodb-backup"' in exprs["BackupPushgatewayStale"]
    assert 'job="mongodb-backup"' in exprs["BackupPushFailed"]
    assert 'up{job=~".*backup.*"}' in exprs["BackupExporterDown"]
    assert "backup_max_age_seconds" in exprs["BackupTooOld"] and "28800" in exprs["BackupTooOld"]


def _test_cases() -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS:
        doc = _yaml(path)
        assert doc.get("rule_files") == ["../backup-rules.yml"], path
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                c = counts.setdefault(case["alertname"], {"firing": 0, "silent": 0})
                c["firing" if case.get("exp_alerts") else "silent"] += 1
    return counts


def test_every_alert_has_firing_and_non_firing_unit_tests() -> None:
    assert RULE_TESTS, "no promtool tests in deploy/prometheus/tests"
    counts = _test_cases()
    for name in EXPECTED_ALERTS:
        assert counts.get(name, {}).get("firing", 0) >= 1, f"{name}: no firing test case"
        assert counts.get(name, {}).get("silent", 0) >= 1, f"{name}: no non-firing test case"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH")
def test_promtool_unit_tests_pass() -> None:
    res = subprocess.run(
        ["promtool", "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_prometheus_example_config() -> None:
    cfg = _yaml(PROM_CONFIG)
    assert "backup-rules.yml" in cfg["rule_files"]
    assert cfg["alerting"]["alertmanagers"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    sidecar = [
        j
        for j in jobs.values()
        if any(t.endswith(":9868") for sc in j.get("static_configs", []) for t in sc["targets"])
    ]
    assert sidecar, "no scrape job for the sidecar's port 9868"
    push = [j for j in jobs.values() if j.get("honor_labels")]
    assert push, "the Pushgateway job needs honor_labels: true"
    for job in jobs:
        assert "backup" in job, f"job {job} breaks the naming convention BackupExporterDown relies on"


def _routes(route: dict[str, Any]) -> list[dict[str, Any]]:
    out = [route]
    for child in route.get("routes", []):
        out += _routes(child)
    return out


def test_alertmanager_routing_and_secrets() -> None:
    cfg = _yaml(AM_CONFIG)
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert {"default", "ops-backups", "oncall"} <= set(receivers)
    assert cfg["route"]["receiver"] == "default"
    key, value = ROUTING_LABEL
    routed = [r for r in _routes(cfg["route"]) if f'{key}="{value}"' in r.get("matchers", [])]
    assert {r["receiver"] for r in routed} == {"ops-backups", "oncall"}
    assert any(r.get("continue") for r in routed if r["receiver"] == "ops-backups")

    slack = receivers["ops-backups"]["slack_configs"][0]
    assert slack["channel"] == "#ops-backups"
    assert slack["api_url_file"] == "/etc/alertmanager/secrets/slack-webhook-url"
    assert receivers["ops-backups"]["email_configs"]

    # No secret in the file: only *_file references.
    text = AM_CONFIG.read_text(encoding="utf-8")
    assert "hooks.slack.com" not in text
    for forbidden in ("api_url:", "smtp_auth_password:", "auth_password:", "routing_key:", "service_key:"):
        assert not re.search(rf"^\s*{forbidden}", text, re.MULTILINE), forbidden

    for rule in cfg.get("inhibit_rules", []):
        for m in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            found = re.fullmatch(r'alertname="(\w+)"', m)
            if found:
                assert found.group(1) in ALERTS, m


def test_dashboard_covers_alerts_and_plan_variable() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] == "backup-exporter"
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[:2] == ["datasource", "plan"]
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    alerts_exprs = [e for e in exprs if "ALERTS{" in e]
    assert alerts_exprs
    regex = re.search(r'alertname=~"([^"]+)"', alerts_exprs[0])
    assert regex
    for name in ALERTS:
        assert re.fullmatch(regex.group(1), name), f"{name} not shown by the dashboard's alert panels"
    metrics_used = set(re.findall(r"\b(backup_\w+)", " ".join(exprs)))
    for metric in (
        "backup_last_success_timestamp_seconds",
        "backup_last_exit_code",
        "backup_runs_total",
        "backup_uploaded_bytes_total",
        "backup_next_run_timestamp_seconds",
    ):
        assert metric in metrics_used


def _github_anchor(heading: str) -> str:
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def test_runbook_anchors_exist_in_readme() -> None:
    if not README.exists():
        pytest.skip("no README.md yet")
    text = README.read_text(encoding="utf-8")
    if not re.search(r"^## Alerts\s*$", text, re.MULTILINE):
        pytest.skip("README has no '## Alerts' section yet")
    anchors = {_github_anchor(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}
    missing = [name for name in ALERTS if name.lower() not in anchors]
    assert not missing, f"README lacks runbook headings for {missing}"
