"""Estimating a run's work in the background: the terminal's progress line (`run-now`) and the daemon's
progress metrics compare what a run has read with it.

The estimate (mongo/estimate.py: the server's collection stats) runs in its own thread, so a slow or
unreachable server never delays the run itself; the run reports an unreachable server on its own.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from backup_exporter.config import PlanConfig
from backup_exporter.core.errors import BackupError
from backup_exporter.mongo.estimate import estimate_work
from backup_exporter.operations.run import Progress

log = logging.getLogger(__name__)

EstimateState = Literal["pending", "ready", "unavailable"]


class EstimateTask:
    """Estimates a plan's work in a thread; sets `progress.estimate` when it is known, and `state` to
    "ready", or to "unavailable" when the server could not tell."""

    def __init__(self, plan: PlanConfig, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.state: EstimateState = "pending"
        self._thread = threading.Thread(target=self._run, name=f"estimate-{plan.name}", daemon=True)

    def start(self) -> EstimateTask:
        """Start the thread; return self."""
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.progress.estimate = estimate_work(self.plan.mongodb_uri, self.plan.include, self.plan.exclude,
                                                   self.plan.connect_timeout_seconds)
            self.state = "ready"
        except BackupError as exc:  # the run itself reports an unreachable server; here it only costs the %
            log.debug("no estimate of the work: %s", exc.message)
            self.state = "unavailable"
        except Exception:
            log.debug("no estimate of the work", exc_info=True)
            self.state = "unavailable"
