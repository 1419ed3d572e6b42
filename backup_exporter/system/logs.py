"""Logging: readable lines on a terminal, JSON lines (level, plan, event, message) for Loki.

A last-resort filter masks anything that looks like a credential, so that even a library's message that
quotes a URI or connection string cannot leak a secret into the log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from backup_exporter.core.redact import redact


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "plan": getattr(record, "plan", None),
            "event": getattr(record, "event", record.name.rsplit(".", 1)[-1]),
            "message": record.getMessage(),
        }
        for key in ("exit_code", "size", "duration", "backup", "engine"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["error"] = redact(self.formatException(record.exc_info)).splitlines()[-1]
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        plan = getattr(record, "plan", None)
        where = f" [{plan}]" if plan else ""
        line = f"{stamp} {record.levelname.lower():7}{where} {record.getMessage()}"
        # Tracebacks only reach the log at debug level (-v), where a bug report needs them.
        if record.exc_info and record.levelno <= logging.DEBUG:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def setup(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send our log records to stderr in the chosen format ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (one line per HTTP request) drowns our events; keep their warnings only.
    for noisy in ("azure", "apscheduler", "urllib3", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def plan_logger(name: str, plan: str) -> logging.LoggerAdapter[logging.Logger]:
    """Return a logger whose records carry the plan (for the JSON `plan` field)."""
    return logging.LoggerAdapter(logging.getLogger(name), {"plan": plan})


def event(logger: logging.LoggerAdapter[logging.Logger], level: int, event_name: str, message: str,
          *args: object, **fields: object) -> None:
    """Log `message` with the JSON fields `event` and any extra fields."""
    extra = dict(logger.extra or {})
    extra.update(fields)
    extra["event"] = event_name
    logger.logger.log(level, message, *args, extra=extra)
