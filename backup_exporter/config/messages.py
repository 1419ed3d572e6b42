"""Validation into Config, with pydantic's errors turned into the project's one-line messages.

Every error becomes "<where>: <what is wrong>": where is "At 'plans.orders.schedule'" for a file, the
variable in environment-only mode; no "Input should be ..." and no links. Secret values are never quoted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from backup_exporter.config.models import SECRET_FIELDS, URI_FIELDS, Config
from backup_exporter.core.errors import ConfigError

Loc = tuple[str | int, ...]
_EXPECTED = {"int": "a whole number", "float": "a number", "bool": "true or false", "string": "text",
             "dict": "a mapping", "model": "a mapping", "mapping": "a mapping",
             "list": "a list", "tuple": "a list", "path": "a file path"}


def at(loc: Loc) -> str:
    """Return "At 'plans.orders.include[0]'" for a location, "At '(top level)'" for the document."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return f"At '{text or '(top level)'}'"


def message(error: ErrorDetails, loc: Loc) -> str:
    """Return what is wrong, in the project's words."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error["input"]
    if kind in ("config", "value_error"):
        return str(ctx.get("message") or ctx.get("error"))
    if kind == "missing":
        return "is required" + (" (an Azure container and its credentials, or type: local and a path)"
                                if loc == ("storage",) else "")
    if kind == "extra_forbidden":
        return "unknown key"
    expected = _EXPECTED.get(kind.split("_")[0])
    if expected is None:
        return error["msg"].replace("Input should be", "expected")
    if any(p in SECRET_FIELDS | URI_FIELDS for p in loc if isinstance(p, str)):
        return f"expected {expected}, got {type(value).__name__}"
    if (kind.endswith("_parsing") and isinstance(value, str)) or kind == "int_from_float":
        return f"{value!r:.60} is not {expected}"
    return f"expected {expected}, got {type(value).__name__} {value!r:.60}"


def validate(raw: Any, source: str, *, reported: Sequence[tuple[Loc, str]] = (),
             where: Callable[[Loc], str] = at) -> Config:
    """Return the Config described by `raw`, named `source` (a file or "environment").

    `reported` are problems found before validation (an unset variable): errors at or below their location
    are not repeated. Raises ConfigError listing every error once, each prefixed by the source.
    """
    lines = [text for _, text in reported]
    try:
        cfg = Config.model_validate(raw, context={"input": True})
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if p != "[key]")  # a bad plan name is reported at the plan
            if not any(loc[:len(done)] == done for done, _ in reported):
                lines.append(f"{where(loc)}: {message(error, loc)}")
    else:
        if not lines:
            return cfg.model_copy(update={"source": source})
    raise ConfigError([f"{source}: {line}" for line in dict.fromkeys(lines)])
