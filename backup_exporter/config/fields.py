"""The configuration's value types: pydantic annotated types built on the project's parsers.

Each accepts what an operator writes in YAML or a variable ("90s", "8MiB", "0.0.0.0:9868", "Europe/Berlin"),
raises ValueError with one line saying what is wrong, and serialises back to that form for check-config.
Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, PlainValidator

from backup_exporter.core.redact import mask_uri
from backup_exporter.core.retention import format_duration, parse_duration
from backup_exporter.core.schedule import CronError, CronSchedule, parse_cron

DEFAULT_LISTEN = "0.0.0.0:9868"
DEFAULT_SCHEDULE = "0 */6 * * *"
PLAN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MANAGED_ARGS = ("--uri", "--password", "-p", "--archive", "--out", "-o", "--config")


def parse_size(value: Any) -> int:
    """Return bytes for 8388608, '8MiB', '8M', '512KiB', '1GiB'. Raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B?)\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError(f"'{value}' is not a size (e.g. 8MiB, 4194304)")
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]


def parse_listen(text: Any) -> tuple[str, int]:
    """Return (host, port) from 'host:port' or ':port'. Raises ValueError."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not host:port (e.g. 0.0.0.0:9868)")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def duration_seconds(value: Any) -> float:
    """Return seconds from a number of seconds (3600, "3600") or a duration ("90s", "1d12h"). Raises
    ValueError unless positive and finite (a zero max_age would fire BackupTooOld forever, a zero
    status_refresh would spin on storage)."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*", value):
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"invalid duration {value!r}: must be a positive number of seconds")
        return float(value)
    return parse_duration(str(value)).total_seconds()


def timezone_name(value: str) -> str:
    """Return the IANA zone name after checking it exists (through parse_cron, which owns zones)."""
    try:
        parse_cron(DEFAULT_SCHEDULE, value)
    except CronError as exc:
        raise ValueError(str(exc)) from None
    return value


def cron(value: Any, timezone: str = "UTC") -> CronSchedule:
    """Return the schedule of a crontab expression (or of a CronSchedule's expression) in `timezone`."""
    text = value.expression if isinstance(value, CronSchedule) else value
    if not isinstance(text, str):
        raise ValueError(f"expected a cron expression, got {type(value).__name__} {value!r}")
    try:
        return parse_cron(text, timezone)
    except CronError as exc:
        raise ValueError(f"invalid cron expression '{text}': {exc}") from None


def between(low: float, high: float = math.inf) -> AfterValidator:
    """Return a validator refusing numbers outside low..high."""
    return check(lambda v: low <= v <= high, lambda v: f"must be {low} or more, got {v}" if high == math.inf
                 else f"must be between {low} and {high}, got {v}")


def one_of(what: str, choices: Sequence[str], *, capitalize: bool = False) -> AfterValidator:
    """Return a validator accepting one of `choices` (any case, stored capitalised, when asked)."""
    def validate(value: str) -> str:
        if (value.capitalize() if capitalize else value) not in choices:
            raise ValueError(f"'{value}' is not {what} (choose {', '.join(choices[:-1])} or {choices[-1]})")
        return value.capitalize() if capitalize else value
    return AfterValidator(validate)


def check(test: Callable[[Any], bool], message: str | Callable[[Any], str]) -> AfterValidator:
    """Return a validator raising `message` (or message(value)) when test(value) is false."""
    def run(value: Any) -> Any:
        if not test(value):
            raise ValueError(message(value) if callable(message) else message)
        return value
    return AfterValidator(run)


def _no_bool(value: Any) -> Any:
    # bool is an int subclass; "keep_last: true" in YAML is a mistake, not 1.
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got a boolean")
    return value


def connection_parts(text: str) -> dict[str, str]:
    """Return the Key=Value pairs of an Azure Storage connection string."""
    return dict(p.split("=", 1) for p in text.strip().strip(";").split(";") if "=" in p)


def _is_connection_string(text: str) -> bool:
    parts = connection_parts(text)
    return bool(parts) and all("=" in p for p in text.strip().strip(";").split(";") if p) and (
        {"AccountName", "AccountKey"} <= parts.keys() or "BlobEndpoint" in parts or "SharedAccessSignature" in parts)


def account_of(connection_string: str | None, account_url: str | None) -> str:
    """Return the storage account's name (or endpoint host) for messages, without secrets."""
    if connection_string:
        parts = connection_parts(connection_string)
        endpoint = urlsplit(parts.get("BlobEndpoint", "")).netloc
        return parts.get("AccountName") or endpoint or "unknown-account"
    return (urlsplit(account_url).netloc.split(".")[0] or account_url) if account_url else "unknown-account"


def _managed(args: tuple[str, ...]) -> str:
    managed = [f"'{a.split('=', 1)[0]}'" for a in args if a.split("=", 1)[0] in MANAGED_ARGS]
    return f"{', '.join(managed)} {'is' if len(managed) == 1 else 'are'} managed by backupctl and may not be set here"


def _mongodb_uri(value: str) -> str:
    if not value:
        return "is required (a mongodb:// or mongodb+srv:// URI)"
    return f"'{mask_uri(value)[:40]}' is not a MongoDB URI (must start with mongodb:// or mongodb+srv://)"


Number = Annotated[int, BeforeValidator(_no_bool)]
Count = Annotated[Number, between(0)]
Positive = Annotated[Number, between(1)]
Seconds = Annotated[float, PlainValidator(duration_seconds), PlainSerializer(
    lambda v: format_duration(timedelta(seconds=v)) if float(v).is_integer() else v)]
Size = Annotated[int, PlainValidator(parse_size)]
# 2 MiB is the smallest start whose growing schedule still fits 4 TiB into Azure's 50,000 blocks.
BlockSize = Annotated[Size, check(lambda v: 2 << 20 <= v <= 256 << 20, "must be between 2MiB and 256MiB")]
Period = Annotated[timedelta, PlainValidator(lambda v: v if isinstance(v, timedelta) else parse_duration(str(v))),
                  PlainSerializer(format_duration)]
Listen = Annotated[tuple[str, int], PlainValidator(lambda v: v if isinstance(v, tuple) else parse_listen(v)),
                   PlainSerializer(lambda v: f"{v[0]}:{v[1]}")]
TimeZoneName = Annotated[str, AfterValidator(timezone_name)]
Cron = Annotated[CronSchedule, PlainValidator(cron), PlainSerializer(
    lambda c: c.expression + ("" if c.timezone.key == "UTC" else f" ({c.timezone.key})"))]
Names = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v)]
MongodumpArgs = Annotated[Names, check(lambda v: not any(a.split("=", 1)[0] in MANAGED_ARGS for a in v), _managed)]
MongoUri = Annotated[str, check(lambda v: v.startswith(("mongodb://", "mongodb+srv://")), _mongodb_uri)]
HttpUrl = Annotated[str, check(lambda v: v.startswith(("http://", "https://")),
                               lambda v: f"'{mask_uri(v)}' is not an http(s) URL")]
AccountUrl = Annotated[str, check(lambda v: v.startswith(("https://", "http://")),
                                  "must be an https:// URL such as https://ACCOUNT.blob.core.windows.net")]
ConnectionString = Annotated[str, check(_is_connection_string, (
    "is not an Azure Storage connection string (expected 'Key=Value;...' with AccountName and AccountKey, or "
    "BlobEndpoint and SharedAccessSignature)"))]
PlanName = Annotated[str, check(PLAN_NAME_RE.match, "plan names use letters, digits, '.', '_' and '-' (at most "
                                                    "63 characters)")]
# YAML reads `{shard: 1}` as a number; a label value is text either way.
Labels = Annotated[dict[str, str], BeforeValidator(lambda v: {str(k): str(x) for k, x in v.items()}
                                                   if isinstance(v, dict) else v)]
