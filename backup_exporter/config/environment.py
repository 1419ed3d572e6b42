"""Environment-only mode: one plan described by variables, validated by the same models as a YAML file.

Values are literal (a '$' in a password stays). Errors name the variable: "BACKUP_SCHEDULE: invalid cron ...".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backup_exporter.config.messages import Loc, at, validate
from backup_exporter.config.models import Config

DEFAULT_PLAN = "default"
_PLAN = {  # variable -> key of the plan (dots go down into a section)
    "MONGODB_URI": "mongodb_uri", "BACKUP_SCHEDULE": "schedule", "BACKUP_TIMEZONE": "timezone",
    "BACKUP_PREFIX": "prefix", "BACKUP_ENGINE": "engine", "BACKUP_MONGODUMP_PATH": "mongodump_path",
    "BACKUP_MAX_AGE": "max_age", "BACKUP_TIMEOUT": "timeout", "BACKUP_COMPRESSION_LEVEL": "compression_level",
    "BACKUP_PARALLEL_COLLECTIONS": "parallel_collections", "BACKUP_MONGODUMP_COMPRESS": "mongodump_compress",
    "BACKUP_ACCESS_TIER": "access_tier", "BACKUP_AGE_RECIPIENTS": "encryption.recipients",
    "BACKUP_AGE_RECIPIENTS_FILE": "encryption.recipients_file", "BACKUP_AGE_IDENTITY_FILE": "encryption.identity_file",
    **{f"BACKUP_{rule.upper()}": f"retention.{rule}"
       for rule in ("keep_last", "keep_within", "keep_daily", "keep_weekly", "keep_monthly")},
}
_OTHER = {  # variable -> key from the top of the configuration
    "AZURE_STORAGE_CONNECTION_STRING": "storage.connection_string", "AZURE_STORAGE_ACCOUNT_URL": "storage.account_url",
    "AZURE_STORAGE_SAS_TOKEN": "storage.sas_token", "AZURE_STORAGE_CONTAINER": "storage.container",
    "BACKUP_LOCAL_DIR": "storage.path", "BACKUP_LISTEN_ADDRESS": "server.listen",
    "BACKUP_API_TOKEN": "server.api_token",
    **{f"BACKUP_PUSHGATEWAY_{key.upper()}": f"pushgateway.{key}"
       for key in ("url", "job", "username", "password", "ca_file", "cert_file", "key_file", "timeout")},
    "BACKUP_TEXTFILE": "pushgateway.textfile", "BACKUP_LOG_FORMAT": "log_format",
}
VARIABLES = [*_PLAN, *_OTHER]
_AZURE = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_SAS_TOKEN",
          "AZURE_STORAGE_CONTAINER")


def from_environment(env: Mapping[str, str]) -> Config:
    """Return the single-plan configuration described by environment variables. Raises ConfigError."""
    name = env.get("BACKUP_PLAN") or DEFAULT_PLAN
    locs: dict[str, Loc] = {var: ("plans", name, *key.split(".")) for var, key in _PLAN.items()}
    locs |= {var: tuple(key.split(".")) for var, key in _OTHER.items()}
    given = {var: env[var] for var in locs if env.get(var, "") != ""}
    if "BACKUP_LOCAL_DIR" in given:  # a local directory wins over any Azure settings
        given = {var: value for var, value in given.items() if var not in _AZURE}
    reported: list[tuple[Loc, str]] = []
    if "MONGODB_URI" not in given:
        reported.append((locs["MONGODB_URI"], "MONGODB_URI is not set (or pass --config FILE / set BACKUPCTL_CONFIG)"))
    if not {"BACKUP_LOCAL_DIR", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL"} & given.keys():
        reported.append((("storage",), "no storage configured: set AZURE_STORAGE_CONNECTION_STRING, or "
                         "AZURE_STORAGE_ACCOUNT_URL (with AZURE_STORAGE_SAS_TOKEN or a managed identity), or "
                         "BACKUP_LOCAL_DIR"))
    elif "BACKUP_LOCAL_DIR" not in given and "AZURE_STORAGE_CONTAINER" not in given:
        reported.append((locs["AZURE_STORAGE_CONTAINER"], "AZURE_STORAGE_CONTAINER is not set"))
    raw: dict[str, Any] = {"storage": {}, "plans": {name: {}}}
    for var, value in given.items():
        *parents, key = map(str, locs[var])
        section = raw
        for part in parents:
            section = section.setdefault(part, {})
        section[key] = value
    # A whole section's error is named by the variable that starts it.
    sections = [("BACKUP_PLAN", ("plans", name)), ("BACKUP_PUSHGATEWAY_CERT_FILE", ("pushgateway",)),
                ("BACKUP_AGE_RECIPIENTS", ("plans", name, "encryption"))]

    def where(loc: Loc) -> str:
        """Return the variable holding a location (the most specific one), else the location."""
        held = [(len(v), var) for var, v in [*locs.items(), *sections] if loc[:len(v)] == v]
        return max(held)[1] if held else at(loc)

    return validate(raw, "environment", reported=reported, where=where)
