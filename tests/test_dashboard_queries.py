"""Every query of the Grafana dashboard against a real Prometheus that has scraped a real daemon.

The daemon has a plan with a successful backup and a plan that fails, and Prometheus evaluates the shipped
rules (durations shortened), so BackupJobFailed fires and the panels on ALERTS have data too. A query fails
the test when Prometheus rejects it or when it returns no series.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests import monitoring_stack as ms

SUCCEEDING, FAILING = "hourly", "weekly"
WAIT = 30.0
# Grafana's built-in variables, as Grafana would expand them for a short time range over 1 s scrapes.
BUILTINS = {"__rate_interval": "5s", "__interval": "1s", "__interval_ms": "1000", "__range": "1m",
            "__range_s": "60", "__range_ms": "60000"}
# The `plan` variable as Grafana's Prometheus data source renders it: All (allValue) and two plans selected.
PLAN_SELECTIONS = {"all plans": ".*", "two plans": f"({SUCCEEDING}|{FAILING})"}


def dashboard() -> dict[str, Any]:
    return json.loads(ms.DASHBOARD.read_text())  # type: ignore[no-any-return]


def panel_targets() -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel, rows' collapsed panels included."""
    found = []
    for panel in dashboard()["panels"]:
        for p in [panel, *(panel.get("panels") or [])]:
            for target in p.get("targets") or []:
                if target.get("expr"):
                    found.append((f"{p.get('title')} ({p.get('id')}/{target.get('refId')})", target))
    return found


def substitute(expr: str, plan: str) -> str:
    """Expand $var, ${var} and ${var:format}: `plan` for $plan, BUILTINS for Grafana's own variables."""
    values = {**BUILTINS, "plan": plan}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


TARGETS = panel_targets()


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ms.MonitoringStack:
    """The shared stack after one successful and one failed backup, with BackupJobFailed firing."""
    stack = ms.shared_stack(request.config, tmp_path_factory)
    stack.set_mode(SUCCEEDING, "ok")
    stack.set_mode(FAILING, "fail")
    stack.run(SUCCEEDING)
    stack.run(FAILING)
    prometheus = stack.prometheus
    prometheus.wait_for(f'backup_runs_total{{plan="{SUCCEEDING}", result="success"}} >= 1', WAIT,
                        "the successful run")
    prometheus.wait_for(f'ALERTS{{alertname="BackupJobFailed", plan="{FAILING}", alertstate="firing"}}', WAIT,
                        "BackupJobFailed to fire")
    return stack


def test_the_dashboard_has_queries_to_check() -> None:
    assert len(TARGETS) >= 10, TARGETS
    for title, target in TARGETS:
        for plan in PLAN_SELECTIONS.values():
            assert "$" not in substitute(target["expr"], plan), title


def test_the_plan_variable_lists_every_plan_of_the_daemon(stack: ms.MonitoringStack) -> None:
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "plan")
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query.strip())
    assert match, f"unexpected plan variable query {query!r}"
    metric, label = match.groups()
    values = stack.prometheus.api(f"label/{label}/values", **{"match[]": metric})
    assert set(ms.PLANS) <= set(values)


@pytest.mark.parametrize("selection", PLAN_SELECTIONS)
@pytest.mark.parametrize(("title", "target"), TARGETS, ids=[title for title, _ in TARGETS])
def test_the_panel_query_returns_data_from_prometheus(stack: ms.MonitoringStack, title: str, target: dict[str, Any],
                                                      selection: str) -> None:
    expr = substitute(target["expr"], PLAN_SELECTIONS[selection])
    prometheus = stack.prometheus
    if target.get("range", not target.get("instant", False)):
        now = time.time()
        series = prometheus.query_range(expr, start=max(stack.started, now - 60), end=now)
        assert any(s["values"] for s in series), f"{title}: range query {expr!r} returned no data"
    else:
        series = prometheus.query(expr)
        assert series, f"{title}: instant query {expr!r} returned no data"


def test_the_firing_alerts_panels_show_the_failing_plan(stack: ms.MonitoringStack) -> None:
    firing = [t for title, t in TARGETS if "ALERTS" in t["expr"]]
    assert firing, "no panel shows the firing alerts"
    for target in firing:
        series = stack.prometheus.query(substitute(target["expr"], PLAN_SELECTIONS["all plans"]))
        if series[0]["metric"].get("__name__") == "ALERTS":
            assert any(s["metric"].get("alertname") == "BackupJobFailed" and s["metric"].get("plan") == FAILING
                       for s in series), series
        else:  # the count
            assert float(series[0]["value"][1]) >= 1, series
