"""Pure builders of the argv tuples we run. Secrets never appear here: they go in a config file on a pipe,
referenced by the "{config}" placeholder that ``execute.Command`` replaces with a /dev/fd path."""

from __future__ import annotations

import json
from collections.abc import Sequence

CONFIG_PLACEHOLDER = "{config}"


def mongodump_argv(binary: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                   extra_args: Sequence[str] = ()) -> tuple[str, ...]:
    """Return mongodump's argv writing a gzip archive to stdout; the URI comes from --config."""
    return (
        binary,
        "--archive",
        "--gzip",
        f"--config={CONFIG_PLACEHOLDER}",
        *(f"--nsInclude={pattern}" for pattern in include),
        *(f"--nsExclude={pattern}" for pattern in exclude),
        *extra_args,
    )


def mongodump_version_argv(binary: str) -> tuple[str, ...]:
    return (binary, "--version")


def tool_config(uri: str) -> bytes:
    """Return the YAML for mongodump/mongorestore --config holding the connection URI (a JSON string is
    valid YAML and quotes every character safely)."""
    return f"uri: {json.dumps(uri)}\n".encode()
