"""Reading the configuration: --config FILE, else $BACKUPCTL_CONFIG, else the environment alone.

A file's values may use ${VAR} / ${VAR:-default} (hand-written: neither PyYAML nor pydantic interpolates,
and an unset variable must be reported where it is used); `defaults:` is merged into every plan.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from backup_exporter.config.environment import from_environment
from backup_exporter.config.messages import Loc, at, validate
from backup_exporter.config.models import Config
from backup_exporter.core.errors import ConfigError

_INTERP_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str], loc: Loc, errors: list[tuple[Loc, str]]) -> Any:
    """Return value with ${VAR} and ${VAR:-default} replaced from env, recursively, and `$$` read as `$`;
    mapping keys become text (a plan named 2024 is '2024'). Appends each unset variable to `errors`."""
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if env.get(name, "") != "" or default is not None:
                return env.get(name) or default or ""
            errors.append((loc, f"{at(loc)}: environment variable {name} is not set"))
            return ""
        return _INTERP_RE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, dict):
        return {str(k): interpolate(v, env, (*loc, str(k)), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, (*loc, i), errors) for i, v in enumerate(value)]
    return value


def from_mapping(raw: Any, env: Mapping[str, str], source: str) -> Config:
    """Return the validated configuration from parsed YAML. Raises ConfigError listing every error."""
    errors: list[tuple[Loc, str]] = []
    raw = interpolate(raw, env, (), errors)
    inherited: dict[str, set[str]] = {}  # per plan, the keys it takes from `defaults:`
    defaults = raw.pop("defaults", None) if isinstance(raw, dict) else None
    if defaults is not None and not isinstance(defaults, dict):
        errors.append((("defaults",), f"{at(('defaults',))}: expected a mapping, got {type(defaults).__name__}"))
    elif defaults and isinstance(raw.get("plans"), dict):
        for name, plan in raw["plans"].items():
            if isinstance(plan, dict) or plan is None:
                inherited[name] = set(defaults) - set(plan or {})
                raw["plans"][name] = {**defaults, **(plan or {})}

    def where(loc: Loc) -> str:
        # An error in a key taken from `defaults:` is reported once, there, instead of at every plan.
        inherits = len(loc) > 2 and loc[0] == "plans" and loc[2] in inherited.get(str(loc[1]), ())
        return at(("defaults", *loc[2:]) if inherits else loc)

    return validate(raw, source, reported=errors, where=where)


def load_file(path: Path, env: Mapping[str, str]) -> Config:
    """Return the configuration in a YAML file. Raises ConfigError."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError([f"cannot read configuration file {path}: {reason}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{path}:{where}: {getattr(exc, 'problem', None) or 'invalid YAML'}"]) from None
    return from_mapping(raw, env, str(path))


def load(config_path: str | None, env: Mapping[str, str] | None = None) -> Config:
    """Return the configuration from --config, else $BACKUPCTL_CONFIG, else the environment alone."""
    env = dict(os.environ if env is None else env)
    path = config_path or env.get("BACKUPCTL_CONFIG")
    return load_file(Path(path), env) if path else from_environment(env)
