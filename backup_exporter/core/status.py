"""The per-plan run record kept in storage beside the backups (``<prefix>/<plan>/_status.json``).

A run writes `running` when it starts (under the plan's lock) and replaces it with its result when it
ends, so a run that was SIGKILLed, OOM-killed or lost with its node leaves a trace: a `running` attempt
whose lock is free again is shown, and then recorded, as a failure with exit code 137.

It is the one truth every process shares: the daemon loads it at start and refreshes it, so a restart or a
``backupctl run-now`` in another process shows in the metrics. A failed run replaces ``last_attempt`` but
never ``last_success``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from backup_exporter.core.errors import StorageError

SUCCESS, FAILURE, INTERRUPTED = "success", "failure", "interrupted"
ABANDONED_EXIT_CODE = 137  # 128 + SIGKILL: what the OOM killer and a lost node look like from outside


@dataclass
class Attempt:
    started: float  # UNIX seconds (UTC)
    finished: float
    exit_code: int
    result: str  # success | failure | interrupted
    message: str = ""
    name: str = ""  # the backup's object name, when one was committed
    size: int = 0
    sha256: str = ""
    engine: str = ""
    # Seconds the run took by the monotonic clock; None in records written before it was kept. The wall
    # clock can be set back or forward during a run, so finished - started is not a duration.
    elapsed: float | None = None

    @property
    def duration(self) -> float:
        """Return the run's duration in seconds, never negative."""
        return max(0.0, self.elapsed if self.elapsed is not None else self.finished - self.started)

    @classmethod
    def from_dict(cls, raw: Any) -> Attempt:
        """Return the attempt a record holds; keys this version does not know (a newer writer's) are
        ignored, so replicas of two versions can share a plan's record. Raises TypeError or ValueError."""
        if not isinstance(raw, dict):
            raise TypeError(f"an attempt is a JSON object, not {type(raw).__name__}")
        return cls(**{k: v for k, v in raw.items() if k in _ATTEMPT_FIELDS})


_ATTEMPT_FIELDS = frozenset(f.name for f in fields(Attempt))


@dataclass(frozen=True)
class Running:
    """An attempt under way: when it started, who runs it, and the backup it is writing."""

    started: float
    holder: str  # host, pid and trigger of the process running it
    name: str = ""
    engine: str = ""


@dataclass
class PlanStatus:
    plan: str
    last_attempt: Attempt | None = None
    last_success: Attempt | None = None
    restore_check: dict[str, Any] = field(default_factory=dict)  # {"time": float, "success": bool, ...}
    running: Running | None = None  # the attempt under way (or one that died without recording its end)
    # The last `backupctl verify` per depth: "stored" (sha256 and size of the stored bytes only: an
    # encrypted backup verified without its key) or "deep" (the archive inside walked, every CRC checked).
    verify: dict[str, dict[str, Any]] = field(default_factory=dict)

    def recorded(self, attempt: Attempt) -> PlanStatus:
        """Return the status after `attempt`: last_success moves only when the attempt succeeded; the
        attempt is no longer running."""
        return PlanStatus(
            plan=self.plan, last_attempt=attempt,
            last_success=attempt if attempt.result == SUCCESS else self.last_success,
            restore_check=dict(self.restore_check), verify=dict(self.verify))

    def starting(self, running: Running) -> PlanStatus:
        """Return the status with `running` under way; an earlier attempt that never finished is first
        recorded as the failure it was."""
        settled = self.abandoned() if self.running is not None else self
        return replace(settled, running=running, restore_check=dict(settled.restore_check),
                       verify=dict(settled.verify))

    def abandoned(self) -> PlanStatus:
        """Return the status with its `running` attempt recorded as a failure (exit 137): call it when no
        process holds the plan's lock any more, so the attempt can never finish."""
        if self.running is None:
            return self
        run = self.running
        attempt = Attempt(started=run.started, finished=run.started, exit_code=ABANDONED_EXIT_CODE,
                          result=FAILURE, name="", engine=run.engine,
                          message=f"the run started by {run.holder} never finished, or could not record its "
                                  "end (killed: SIGKILL, out of memory, its node lost; or storage not answering "
                                  "as it ended)")
        return self.recorded(attempt)

    def recorded_late(self, attempt: Attempt) -> PlanStatus | None:
        """Return the status with `attempt` recorded after the fact (its run could not write its end, storage
        being unreachable then), or None when the record has moved on since (a newer run).

        The attempt replaces the `running` entry it left behind, or the 137 "never finished" entry another
        process wrote for it, or becomes the last attempt when it is newer than the one recorded.
        """
        if self.running is not None:
            return self.recorded(attempt) if self.running.started == attempt.started else None
        last = self.last_attempt
        if last is not None and last.started == attempt.started and last.exit_code == ABANDONED_EXIT_CODE:
            return replace(self, last_attempt=attempt,
                           last_success=attempt if attempt.result == SUCCESS else self.last_success,
                           restore_check=dict(self.restore_check), verify=dict(self.verify))
        if last is None or last.started < attempt.started:
            return self.recorded(attempt)
        return None

    def to_json(self) -> bytes:
        """Return the record of runs; the restore-check verdict lives in its own object (see load)."""
        data = asdict(self)
        data.pop("restore_check")
        data.pop("verify")
        return json.dumps(data, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, plan: str, data: bytes | None) -> PlanStatus:
        """Return the parsed status (an empty one for None). Raises StorageError when unreadable."""
        if not data:
            return cls(plan=plan)
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            return cls(
                plan=plan,
                last_attempt=Attempt.from_dict(raw["last_attempt"]) if raw.get("last_attempt") else None,
                last_success=Attempt.from_dict(raw["last_success"]) if raw.get("last_success") else None,
                restore_check=dict(raw.get("restore_check") or {}),
                running=Running(**raw["running"]) if raw.get("running") else None)
        except (ValueError, TypeError, KeyError) as exc:
            raise StorageError(f"status record of plan '{plan}' is unreadable: {exc}") from None


VERIFY_DEPTHS = ("stored", "deep")


def verify_name(status_name: str) -> str:
    """Return the object beside `status_name` that holds the plan's last verify verdicts (written by
    `backupctl verify`, which takes no lock)."""
    return status_name.rsplit("/", 1)[0] + "/_verify.json" if "/" in status_name else "_verify.json"


def restore_check_name(status_name: str) -> str:
    """Return the object beside `status_name` that holds the plan's last restore-check verdict.

    Backups (under the plan's lock) and restore drills (without it: a drill must not wait hours for a
    backup) write different objects, so neither can overwrite what the other recorded, across processes too.
    """
    return status_name.rsplit("/", 1)[0] + "/_restore_check.json" if "/" in status_name else "_restore_check.json"
