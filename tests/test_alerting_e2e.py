"""Alert delivery end to end: the daemon (or a run-now push) -> Prometheus with the shipped rules (durations
shortened) -> Alertmanager with the shipped routing (receivers pointed at a local webhook server).

See tests/monitoring_stack.py for how the configurations are derived from deploy/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import monitoring_stack as ms
from tests.cli_helpers import FAKE_MONGODUMP, backupctl, base_env

# Receivers of the shipped alertmanager.yml: every backup alert goes to ops-backups, critical ones to oncall too.
CRITICAL_RECEIVERS = {"ops-backups", "oncall"}
WARNING_RECEIVERS = {"ops-backups"}
WAIT = 30.0  # seconds for any one hop chain (scrape 1s + evaluation 1s + for 1s + group_wait 1s, with slack)
RUNBOOK_BASE = "https://github.com/backup-exporter/backup_exporter/blob/main/README.md#"


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ms.MonitoringStack:
    return ms.shared_stack(request.config, tmp_path_factory)


def test_a_failed_backup_pages_ops_backups_and_oncall_and_resolves_after_a_successful_run(
        stack: ms.MonitoringStack) -> None:
    plan = "nightly"
    webhook = stack.webhook
    stack.set_mode(plan, "fail")
    stack.run(plan)
    assert stack.daemon.value("backup_last_exit_code", plan=plan) == 1

    try:
        webhook.wait_for_receivers(CRITICAL_RECEIVERS, "firing", WAIT, alertname="BackupJobFailed", plan=plan)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    for alert in webhook.alerts(alertname="BackupJobFailed", plan=plan):
        assert alert.labels == {
            "alertname": "BackupJobFailed", "severity": "critical", "team": "ops-backups", "plan": plan,
            "job": ms.DAEMON_JOB, "instance": f"127.0.0.1:{stack.daemon.port}",
        }
        assert alert.annotations["summary"] == f"Backup plan {plan} failed with exit code 1"
        assert alert.annotations["runbook_url"] == RUNBOOK_BASE + "backupjobfailed"
        assert f"instance 127.0.0.1:{stack.daemon.port}" in alert.annotations["description"]

    # The plan never succeeded either: a warning, which reaches ops-backups but does not page.
    webhook.wait_for_receivers(WARNING_RECEIVERS, "firing", WAIT, alertname="BackupNeverSucceeded", plan=plan)

    stack.set_mode(plan, "ok")
    stack.run(plan)
    assert stack.daemon.value("backup_last_exit_code", plan=plan) == 0
    webhook.wait_for_receivers(CRITICAL_RECEIVERS, "resolved", WAIT, alertname="BackupJobFailed", plan=plan)
    webhook.wait_for_receivers(WARNING_RECEIVERS, "resolved", WAIT, alertname="BackupNeverSucceeded", plan=plan)

    for alert in webhook.alerts(plan=plan):
        if alert.labels["severity"] == "critical":
            assert alert.receiver in CRITICAL_RECEIVERS, alert
        else:
            assert alert.receiver in WARNING_RECEIVERS, f"a warning reached {alert.receiver}: {alert}"


def test_a_failed_run_now_pushed_to_the_pushgateway_fires_backup_job_failed_and_a_successful_one_resolves_it(
        stack: ms.MonitoringStack, tmp_path: Path) -> None:
    plan = "cron"
    store = tmp_path / "store"
    store.mkdir()
    config = tmp_path / "backupctl.yml"
    config.write_text(f"""storage:
  type: local
  path: {store}
plans:
  {plan}:
    mongodb_uri: mongodb://127.0.0.1:1/
    schedule: "0 3 * * *"
    engine: mongodump
    mongodump_path: {FAKE_MONGODUMP}
""")
    gateway = f"http://{stack.pushgateway.address}"

    failed = backupctl(["run-now", "--config", str(config), "--pushgateway", gateway],
                       base_env(FAKE_MONGODUMP_MODE="fail"))
    assert failed.returncode == 1, failed.stderr
    stack.prometheus.wait_for(f'backup_last_exit_code{{job="{ms.DAEMON_JOB}", plan="{plan}"}} == 1', WAIT,
                              "the pushed exit code")
    try:
        stack.webhook.wait_for_receivers(CRITICAL_RECEIVERS, "firing", WAIT, alertname="BackupJobFailed", plan=plan)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    for alert in stack.webhook.alerts(alertname="BackupJobFailed", plan=plan):
        # honor_labels: the push's job is kept and the Pushgateway's empty instance label is dropped.
        assert alert.labels == {
            "alertname": "BackupJobFailed", "severity": "critical", "team": "ops-backups", "plan": plan,
            "job": ms.DAEMON_JOB,
        }
        assert alert.annotations["summary"] == f"Backup plan {plan} failed with exit code 1"

    succeeded = backupctl(["run-now", "--config", str(config), "--pushgateway", gateway],
                          base_env(FAKE_MONGODUMP_MODE="ok"))
    assert succeeded.returncode == 0, succeeded.stderr
    stack.webhook.wait_for_receivers(CRITICAL_RECEIVERS, "resolved", WAIT, alertname="BackupJobFailed", plan=plan)
