"""Configuration: a YAML file with named plans, or the environment alone for a single-plan sidecar.

Every error is collected with its path ("At 'plans.orders.schedule': ...") and reported at once through
ConfigError. Secrets are read from the environment through ${VAR} / ${VAR:-default} interpolation and are
never printed: ``masked()`` renders the configuration for humans.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from backup_exporter.core.errors import ConfigError
from backup_exporter.core.redact import mask_uri
from backup_exporter.core.retention import RetentionPolicy, parse_duration
from backup_exporter.core.schedule import CronError, CronSchedule, parse_cron

DEFAULT_LISTEN = "0.0.0.0:9868"
DEFAULT_PLAN = "default"
DEFAULT_SCHEDULE = "0 */6 * * *"
DEFAULT_MAX_AGE_SECONDS = 8 * 3600
PLAN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENGINES = ("auto", "mongodump", "native")
PLAN_KEYS = frozenset({
    "mongodb_uri", "schedule", "timezone", "prefix", "engine", "mongodump_path", "mongodump_args", "include",
    "exclude", "max_age", "connect_timeout", "timeout", "retention", "restore_check",
    "compression_level", "parallel_collections", "mongodump_compress",
})
_INTERP_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class StorageConfig:
    type: str = "azure"  # "azure" | "local"
    container: str = ""
    connection_string: str | None = None
    account_url: str | None = None
    sas_token: str | None = None
    use_identity: bool = False  # DefaultAzureCredential when only account_url is given
    path: Path | None = None
    block_size: int = 8 << 20
    max_concurrency: int = 4
    create_container: bool = False

    def describe(self) -> str:
        """Return where backups go, without secrets."""
        if self.type == "local":
            return f"local directory {self.path}"
        account = _account_of(self.connection_string, self.account_url)
        return f"azure://{account}/{self.container}"


@dataclass(frozen=True)
class RestoreCheckConfig:
    schedule: CronSchedule | None = None
    uri: str | None = None


@dataclass(frozen=True)
class PlanConfig:
    name: str
    mongodb_uri: str
    schedule: CronSchedule
    prefix: str = ""
    engine: str = "auto"
    mongodump_path: str = "mongodump"
    mongodump_args: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    connect_timeout_seconds: float = 10.0
    timeout_seconds: float | None = None  # stop a run that takes longer (exit 124); None = no limit
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    restore_check: RestoreCheckConfig = field(default_factory=RestoreCheckConfig)
    compression_level: int = 1  # ISA-L gzip level 0-3 (archive.COMPRESSION_LEVELS)
    parallel_collections: int = 4  # collection readers of the native engine, 1-16
    mongodump_compress: bool = False  # true: mongodump --gzip; false: backupctl gzips mongodump's stream


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 9868
    api_token: str | None = None
    max_parallel_runs: int = 2
    grace_period_seconds: float = 10.0
    status_refresh_seconds: float = 30.0


@dataclass(frozen=True)
class PushConfig:
    url: str | None = None
    job: str = "mongodb-backup"
    grouping_key: Mapping[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout_seconds: float = 10.0
    textfile: str | None = None


@dataclass(frozen=True)
class Config:
    storage: StorageConfig
    plans: Mapping[str, PlanConfig]
    server: ServerConfig = field(default_factory=ServerConfig)
    pushgateway: PushConfig = field(default_factory=PushConfig)
    log_format: str = "text"
    source: str = "environment"

    def plan(self, name: str | None) -> PlanConfig:
        """Return the named plan, or the only plan when name is None. Raises ConfigError."""
        if name is None:
            if len(self.plans) == 1:
                return next(iter(self.plans.values()))
            raise ConfigError([f"several plans are configured ({', '.join(self.plans)}): choose one with --plan"])
        if name not in self.plans:
            raise ConfigError([f"no plan named '{name}' (configured: {', '.join(self.plans) or 'none'})"])
        return self.plans[name]


# --- helpers -------------------------------------------------------------------------------------------

def _account_of(connection_string: str | None, account_url: str | None) -> str:
    if connection_string:
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        if "AccountName" in parts:
            return parts["AccountName"]
        endpoint = parts.get("BlobEndpoint")
        if endpoint:
            return urlsplit(endpoint).netloc
        return "unknown-account"
    if account_url:
        return urlsplit(account_url).netloc.split(".")[0] or account_url
    return "unknown-account"


def _looks_like_connection_string(text: str) -> bool:
    parts = dict(p.split("=", 1) for p in text.strip().strip(";").split(";") if "=" in p)
    if not parts or any("=" not in p for p in text.strip().strip(";").split(";") if p):
        return False
    return ("AccountName" in parts and "AccountKey" in parts) or "BlobEndpoint" in parts \
        or "SharedAccessSignature" in parts


def parse_size(value: Any) -> int:
    """Return bytes for 8388608, '8MiB', '8M', '512KiB', '1GiB'. Raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B?)\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError(f"'{value}' is not a size (e.g. 8MiB, 4194304)")
    number, unit = int(match.group(1)), match.group(2).upper()
    return number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def parse_listen(text: str) -> tuple[str, int]:
    """Return (host, port) from 'host:port' or ':port'. Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not host:port (e.g. 0.0.0.0:9868)")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def interpolate(value: Any, env: Mapping[str, str], path: str, errors: list[str]) -> Any:
    """Return value with ${VAR} and ${VAR:-default} replaced from env, recursively; unset vars are errors."""
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            errors.append(f"At '{path}': environment variable {name} is not set")
            return ""
        return _INTERP_RE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


class _Section:
    """Reads one mapping of the raw YAML, recording errors with paths instead of raising."""

    def __init__(self, raw: Any, path: str, errors: list[str]) -> None:
        self.path, self.errors = path, errors
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.error(f"expected a mapping, got {type(raw).__name__}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, message: str, key: str | None = None) -> None:
        self.errors.append(f"At '{self.at(key) if key else self.path or '(top level)'}': {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.raw or self.raw[key] is None or self.raw[key] == "":
            return default
        value = self.raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, bool):
            self.error("expected an integer, got a boolean", key)
            return default
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.error(f"expected {names}, got {type(value).__name__} {value!r}", key)
            return default
        return value

    def convert(self, key: str, func: Callable[[Any], Any], default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.raw or self.raw[key] is None or self.raw[key] == "":
            return default
        try:
            return func(self.raw[key])
        except (ValueError, TypeError) as exc:
            self.error(str(exc), key)
            return default

    def section(self, key: str) -> _Section:
        self.seen.add(key)
        return _Section(self.raw.get(key), self.at(key), self.errors)

    def positive(self, key: str, kind: type, default: Any, minimum: float = 1) -> Any:
        value = self.get(key, kind, default)
        if value is not None and value < minimum:
            self.error(f"must be at least {minimum}, got {value}", key)
            return default
        return value

    def finish(self) -> None:
        for key in sorted(set(self.raw) - self.seen, key=str):
            known = ", ".join(sorted(self.seen))
            self.error(f"unknown key (known keys: {known})", str(key))


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _duration_seconds(value: Any) -> float:
    """Return seconds from a bare number of seconds or a duration such as '90s' or '1d12h'. Raises
    ValueError unless positive and finite (a zero max_age would fire BackupTooOld forever, a zero
    status_refresh would spin on storage)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"invalid duration {value!r}: must be a positive number of seconds")
        return float(value)
    return parse_duration(str(value)).total_seconds()


def _int_between(value: Any, low: int, high: int) -> int:
    """Return value as a whole number from low to high. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"must be from {low} to {high}, got {number}")
    return number


def _boolean(value: Any) -> bool:
    """Return a YAML boolean, or the strings true/false/yes/no/1/0 (environment). Raises ValueError."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _timezone(value: Any) -> str:
    """Return the IANA zone name `value` after checking it exists. Raises ValueError."""
    name = str(value)
    try:
        parse_cron(DEFAULT_SCHEDULE, name)
    except CronError as exc:
        raise ValueError(str(exc)) from None
    return name


def _cron(value: Any, timezone: str) -> CronSchedule:
    try:
        return parse_cron(str(value), timezone)
    except CronError as exc:
        raise ValueError(f"invalid cron expression '{value}': {exc}") from None


def _retention(section: _Section) -> RetentionPolicy:
    def count(key: str) -> int | None:
        value = section.get(key, int)
        if value is not None and value < 0:
            section.error(f"must be 0 or more, got {value}", key)
            return None
        return value  # type: ignore[no-any-return]

    policy = RetentionPolicy(
        keep_last=count("keep_last"),
        keep_within=section.convert("keep_within", lambda v: parse_duration(str(v))),
        keep_daily=count("keep_daily"),
        keep_weekly=count("keep_weekly"),
        keep_monthly=count("keep_monthly"),
    )
    section.finish()
    return policy


def _mongodb_uri(section: _Section, key: str) -> str:
    uri = section.get(key, str)
    if uri is None:
        section.error("is required (a mongodb:// or mongodb+srv:// URI)", key)
        return ""
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        section.error(f"'{mask_uri(uri)[:40]}' is not a MongoDB URI (must start with mongodb:// or mongodb+srv://)",
                      key)
    return uri  # type: ignore[no-any-return]


def _plan(name: str, section: _Section, defaults: dict[str, Any]) -> PlanConfig | None:
    if not PLAN_NAME_RE.match(name):
        section.error("plan names use letters, digits, '.', '_' and '-' (at most 63 characters)")
    for key, value in defaults.items():
        section.raw.setdefault(key, value)
    timezone = section.get("timezone", str, "UTC")
    if timezone != "UTC":
        # Checked on its own so that the error names 'timezone', and a zone set without a schedule still
        # applies to the default schedule instead of being ignored.
        timezone = section.convert("timezone", _timezone, "UTC")
    schedule = section.convert("schedule", lambda v: _cron(v, timezone))
    engine = section.get("engine", str, "auto")
    if engine not in ENGINES:
        section.error(f"'{engine}' is not an engine (choose {', '.join(ENGINES)})", "engine")
    restore = section.section("restore_check")
    restore_schedule = restore.convert("schedule", lambda v: _cron(v, timezone))
    restore_uri = restore.get("uri", str)
    if restore_schedule is not None and not restore_uri:
        restore.error("is required when restore_check.schedule is set (a scratch MongoDB URI)", "uri")
    restore.finish()
    plan = PlanConfig(
        name=name,
        mongodb_uri=_mongodb_uri(section, "mongodb_uri"),
        schedule=schedule or _cron(DEFAULT_SCHEDULE, timezone),
        prefix=section.get("prefix", str, "").strip("/"),
        engine=engine,
        mongodump_path=section.get("mongodump_path", str, "mongodump"),
        mongodump_args=section.convert("mongodump_args", _string_list, ()),
        include=section.convert("include", _string_list, ()),
        exclude=section.convert("exclude", _string_list, ()),
        max_age_seconds=section.convert("max_age", _duration_seconds, float(DEFAULT_MAX_AGE_SECONDS)),
        connect_timeout_seconds=section.convert("connect_timeout", _duration_seconds, 10.0),
        timeout_seconds=section.convert("timeout", _duration_seconds, None),
        retention=_retention(section.section("retention")),
        restore_check=RestoreCheckConfig(restore_schedule, restore_uri),
        compression_level=section.convert("compression_level", lambda v: _int_between(v, 0, 3), 1),
        parallel_collections=section.convert("parallel_collections", lambda v: _int_between(v, 1, 16), 4),
        mongodump_compress=section.convert("mongodump_compress", _boolean, False),
    )
    for arg in plan.mongodump_args:
        if arg.split("=", 1)[0] in ("--uri", "--password", "-p", "--archive", "--out", "-o", "--config"):
            section.error(f"'{arg.split('=', 1)[0]}' is managed by backupctl and may not be set here",
                          "mongodump_args")
    assert section.seen >= PLAN_KEYS, "PLAN_KEYS is out of date"
    section.finish()
    return plan


def _storage(section: _Section) -> StorageConfig:
    kind = section.get("type", str, None)
    path = section.get("path", str)
    if kind is None:
        kind = "local" if path else "azure"
    if kind not in ("azure", "local"):
        section.error(f"'{kind}' is not a storage type (choose azure or local)", "type")
    cfg = StorageConfig(
        type=kind,
        container=section.get("container", str, ""),
        connection_string=section.get("connection_string", str),
        account_url=section.get("account_url", str),
        sas_token=section.get("sas_token", str),
        path=Path(path) if path else None,
        block_size=section.convert("block_size", parse_size, 8 << 20),
        max_concurrency=section.positive("max_concurrency", int, 4),
        create_container=bool(section.get("create_container", bool, False)),
    )
    if kind == "local" and cfg.path is None:
        section.error("is required for local storage (a directory)", "path")
    if kind == "azure":
        if not cfg.container:
            section.error("is required for Azure storage (the blob container name)", "container")
        if not cfg.connection_string and not cfg.account_url:
            section.error("Azure storage needs connection_string, or account_url (with sas_token or a managed "
                          "identity)")
        if cfg.connection_string and not _looks_like_connection_string(cfg.connection_string):
            section.error("is not an Azure Storage connection string (expected 'Key=Value;...' with AccountName "
                          "and AccountKey, or BlobEndpoint and SharedAccessSignature)", "connection_string")
        if cfg.account_url and not cfg.account_url.startswith(("https://", "http://")):
            section.error("must be an https:// URL such as https://ACCOUNT.blob.core.windows.net", "account_url")
        cfg = replace(cfg, use_identity=bool(cfg.account_url and not cfg.sas_token and not cfg.connection_string))
    # 2 MiB is the smallest start whose growing schedule still fits 4 TiB into Azure's 50,000 blocks.
    if not 2 << 20 <= cfg.block_size <= 256 << 20:
        section.error("must be between 2MiB and 256MiB", "block_size")
    section.finish()
    return cfg


def _server(section: _Section) -> ServerConfig:
    host, port = section.convert("listen", parse_listen, parse_listen(DEFAULT_LISTEN))
    cfg = ServerConfig(
        listen_host=host, listen_port=port, api_token=section.get("api_token", str),
        max_parallel_runs=section.positive("max_parallel_runs", int, 2),
        grace_period_seconds=section.convert("grace_period", _duration_seconds, 10.0),
        status_refresh_seconds=section.convert("status_refresh", _duration_seconds, 30.0),
    )
    section.finish()
    return cfg


def _pushgateway(section: _Section) -> PushConfig:
    grouping = section.get("grouping_key", dict, {})
    cfg = PushConfig(
        url=section.get("url", str), job=section.get("job", str, "mongodb-backup"),
        grouping_key={str(k): str(v) for k, v in grouping.items()},
        username=section.get("username", str), password=section.get("password", str),
        ca_file=section.get("ca_file", str), cert_file=section.get("cert_file", str),
        key_file=section.get("key_file", str),
        timeout_seconds=section.convert("timeout", _duration_seconds, 10.0),
        textfile=section.get("textfile", str),
    )
    if cfg.url and not cfg.url.startswith(("http://", "https://")):
        section.error(f"'{cfg.url}' is not an http(s) URL", "url")
    if bool(cfg.cert_file) != bool(cfg.key_file):
        section.error("cert_file and key_file go together")
    section.finish()
    return cfg


def from_mapping(raw: Any, env: Mapping[str, str], source: str) -> Config:
    """Return the validated configuration from parsed YAML. Raises ConfigError listing every error."""
    errors: list[str] = []
    raw = interpolate(raw, env, "", errors)
    top = _Section(raw, "", errors)
    storage = _storage(top.section("storage"))
    server = _server(top.section("server"))
    push = _pushgateway(top.section("pushgateway"))
    log_format = top.get("log_format", str, "text")
    if log_format not in ("text", "json"):
        top.error(f"'{log_format}' is not a log format (choose text or json)", "log_format")
    defaults = dict(top.get("defaults", dict, {}))
    for key in sorted(set(defaults) - PLAN_KEYS, key=str):
        errors.append(f"At 'defaults.{key}': unknown key (known keys: {', '.join(sorted(PLAN_KEYS))})")
        del defaults[key]  # reported once here, not again at every plan
    plans_section = top.section("plans")
    plans: dict[str, PlanConfig] = {}
    if not plans_section.raw:
        plans_section.error("at least one plan is required")
    for name in plans_section.raw:
        plans_section.seen.add(name)
        plan = _plan(str(name), plans_section.section(str(name)), dict(defaults))
        if plan is not None:
            plans[str(name)] = plan
    top.finish()
    if errors:
        raise ConfigError([f"{source}: {e}" for e in errors])
    return Config(storage=storage, plans=plans, server=server, pushgateway=push, log_format=log_format,
                  source=source)


def load_file(path: Path, env: Mapping[str, str]) -> Config:
    """Return the configuration in a YAML file. Raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read configuration file {path}: {exc.strerror or exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}:{where}: {problem}"]) from None
    return from_mapping(raw, env, str(path))


ENV_KEYS = {
    "MONGODB_URI": ("plans", "mongodb_uri"),
    "BACKUP_SCHEDULE": ("plans", "schedule"),
    "BACKUP_TIMEZONE": ("plans", "timezone"),
    "BACKUP_PREFIX": ("plans", "prefix"),
    "BACKUP_ENGINE": ("plans", "engine"),
    "BACKUP_MONGODUMP_PATH": ("plans", "mongodump_path"),
    "BACKUP_MAX_AGE": ("plans", "max_age"),
    "BACKUP_TIMEOUT": ("plans", "timeout"),
    "BACKUP_COMPRESSION_LEVEL": ("plans", "compression_level"),
    "BACKUP_PARALLEL_COLLECTIONS": ("plans", "parallel_collections"),
    "BACKUP_MONGODUMP_COMPRESS": ("plans", "mongodump_compress"),
    "BACKUP_KEEP_LAST": ("retention", "keep_last"),
    "BACKUP_KEEP_WITHIN": ("retention", "keep_within"),
    "BACKUP_KEEP_DAILY": ("retention", "keep_daily"),
    "BACKUP_KEEP_WEEKLY": ("retention", "keep_weekly"),
    "BACKUP_KEEP_MONTHLY": ("retention", "keep_monthly"),
    "AZURE_STORAGE_CONNECTION_STRING": ("storage", "connection_string"),
    "AZURE_STORAGE_ACCOUNT_URL": ("storage", "account_url"),
    "AZURE_STORAGE_SAS_TOKEN": ("storage", "sas_token"),
    "AZURE_STORAGE_CONTAINER": ("storage", "container"),
    "BACKUP_LOCAL_DIR": ("storage", "path"),
    "BACKUP_LISTEN_ADDRESS": ("server", "listen"),
    "BACKUP_API_TOKEN": ("server", "api_token"),
    "BACKUP_PUSHGATEWAY_URL": ("pushgateway", "url"),
    "BACKUP_PUSHGATEWAY_JOB": ("pushgateway", "job"),
    "BACKUP_PUSHGATEWAY_USERNAME": ("pushgateway", "username"),
    "BACKUP_PUSHGATEWAY_PASSWORD": ("pushgateway", "password"),
    "BACKUP_PUSHGATEWAY_CA_FILE": ("pushgateway", "ca_file"),
    "BACKUP_PUSHGATEWAY_CERT_FILE": ("pushgateway", "cert_file"),
    "BACKUP_PUSHGATEWAY_KEY_FILE": ("pushgateway", "key_file"),
    "BACKUP_PUSHGATEWAY_TIMEOUT": ("pushgateway", "timeout"),
    "BACKUP_TEXTFILE": ("pushgateway", "textfile"),
    "BACKUP_LOG_FORMAT": ("top", "log_format"),
}
_INT_KEYS = {"keep_last", "keep_daily", "keep_weekly", "keep_monthly"}


def from_environment(env: Mapping[str, str]) -> Config:
    """Return the single-plan configuration described by environment variables. Raises ConfigError."""
    errors: list[str] = []
    raw: dict[str, Any] = {"storage": {}, "server": {}, "pushgateway": {}}
    plan: dict[str, Any] = {"retention": {}}
    for var, (where, key) in ENV_KEYS.items():
        value = env.get(var, "")
        if value == "":
            continue
        if key in _INT_KEYS:
            if not value.strip().isdigit():
                errors.append(f"environment: {var}='{value}' is not a whole number")
                continue
            value = int(value)  # type: ignore[assignment]
        if where == "plans":
            plan[key] = value
        elif where == "retention":
            plan["retention"][key] = value
        elif where == "top":
            raw[key] = value
        else:
            raw[where][key] = value
    if "mongodb_uri" not in plan:
        errors.append("environment: MONGODB_URI is not set (or pass --config FILE / set BACKUPCTL_CONFIG)")
    storage = raw["storage"]
    if "path" in storage:
        storage["type"] = "local"
        for azure_key in ("connection_string", "account_url", "sas_token", "container"):
            storage.pop(azure_key, None)
    elif not storage.get("connection_string") and not storage.get("account_url"):
        errors.append("environment: no storage configured: set AZURE_STORAGE_CONNECTION_STRING, "
                      "or AZURE_STORAGE_ACCOUNT_URL (with AZURE_STORAGE_SAS_TOKEN or a managed identity), "
                      "or BACKUP_LOCAL_DIR")
    elif not storage.get("container"):
        errors.append("environment: AZURE_STORAGE_CONTAINER is not set")
    if errors:
        raise ConfigError(errors)
    name = env.get("BACKUP_PLAN") or DEFAULT_PLAN
    raw["plans"] = {name: plan}
    # Values are literal here: a '$' in a password must not be interpolated.
    escaped = _escape_dollars(raw)
    try:
        return from_mapping(escaped, env, "environment")
    except ConfigError as exc:
        raise ConfigError([_name_variable(error, name) for error in exc.errors]) from None


def _name_variable(error: str, plan: str) -> str:
    """Rewrite "At 'plans.default.schedule': ..." as "BACKUP_SCHEDULE: ..." for environment-only mode."""
    for var, (where, key) in ENV_KEYS.items():
        path = {"plans": f"plans.{plan}.{key}", "retention": f"plans.{plan}.retention.{key}",
                "top": key}.get(where, f"{where}.{key}")
        marker = f"At '{path}': "
        if marker in error:
            return error.replace(marker, f"{var}: ")
    return error.replace(f"At 'plans.{plan}': ", "BACKUP_PLAN: ")


def _escape_dollars(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape_dollars(v) for k, v in value.items()}
    return value


def load(config_path: str | None, env: Mapping[str, str] | None = None) -> Config:
    """Return the configuration from --config, else $BACKUPCTL_CONFIG, else the environment alone."""
    env = dict(os.environ if env is None else env)
    path = config_path or env.get("BACKUPCTL_CONFIG")
    if path:
        return load_file(Path(path), env)
    return from_environment(env)


SECRET_FIELDS = {"connection_string", "sas_token", "password", "api_token"}


def masked(config: Config) -> dict[str, Any]:
    """Return the configuration as plain data with every secret masked, for check-config."""

    def render(obj: Any) -> Any:
        if isinstance(obj, CronSchedule):
            return obj.expression + ("" if obj.timezone.key == "UTC" else f" ({obj.timezone.key})")
        if isinstance(obj, RetentionPolicy):
            return {k: (str(v) if v is not None and not isinstance(v, int) else v)
                    for k, v in vars(obj).items() if v is not None}
        if hasattr(obj, "__dataclass_fields__"):
            out: dict[str, Any] = {}
            for f in fields(obj):
                value = getattr(obj, f.name)
                if f.name in SECRET_FIELDS and value:
                    out[f.name] = "***"
                elif f.name in ("mongodb_uri", "uri") and value:
                    out[f.name] = mask_uri(value)
                else:
                    out[f.name] = render(value)
            return out
        if isinstance(obj, Mapping):
            return {str(k): render(v) for k, v in obj.items()}
        if isinstance(obj, tuple | list):
            return [render(v) for v in obj]
        if isinstance(obj, Path):
            return str(obj)
        return obj

    result = render(config)
    assert isinstance(result, dict)
    return result
