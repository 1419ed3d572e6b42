"""Pure builders of the argv tuples we run. Secrets never appear here: they go in a config file on a pipe,
referenced by the "{config}" placeholder that ``execute.Command`` replaces with a /dev/fd path."""

from __future__ import annotations

import json
from collections.abc import Sequence

from backup_exporter.core.errors import UsageError

CONFIG_PLACEHOLDER = "{config}"


def mongodump_filters(include: Sequence[str], exclude: Sequence[str]) -> tuple[str, ...]:
    """Return mongodump's options for the plan's namespace filters.

    mongodump has no --nsInclude/--nsExclude (only mongorestore does): it takes one --db, optionally one
    --collection, and with --db any --excludeCollection / --excludeCollectionsWithPrefix. So include may
    be empty or one "db.*" / "db.collection", and exclude patterns "db.collection" / "db.prefix*" of that
    same database. Raises UsageError naming a filter mongodump cannot express (the native engine can).
    """
    def refuse(pattern: str, why: str) -> UsageError:
        return UsageError(f"engine mongodump cannot apply the namespace filter {pattern!r}: {why}; "
                          f"use engine native, which takes any pattern")

    if not include and not exclude:
        return ()
    if len(include) != 1:
        raise refuse(", ".join(include) or ", ".join(exclude),
                     "it dumps one database (exactly one include \"db.*\" or \"db.collection\")")
    db, dot, coll = include[0].partition(".")
    if not db or not dot or not coll or "*" in db or ("*" in coll and coll != "*"):
        raise refuse(include[0], "only \"db.*\" or \"db.collection\" can be included")
    args = [f"--db={db}"] + ([] if coll == "*" else [f"--collection={coll}"])
    for pattern in exclude:
        edb, edot, ecoll = pattern.partition(".")
        if edb != db or not edot or not ecoll or "*" in ecoll[:-1]:
            raise refuse(pattern, f"only \"{db}.collection\" or \"{db}.prefix*\" can be excluded")
        args.append(f"--excludeCollectionsWithPrefix={ecoll[:-1]}" if ecoll.endswith("*")
                    else f"--excludeCollection={ecoll}")
    return tuple(args)


def mongodump_argv(binary: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                   extra_args: Sequence[str] = (), gzip: bool = True) -> tuple[str, ...]:
    """Return mongodump's argv writing an archive to stdout, gzip-compressed by mongodump when `gzip`
    (otherwise uncompressed, for the caller to compress); the URI comes from --config.
    Raises UsageError for filters mongodump cannot express (mongodump_filters)."""
    return (
        binary,
        "--archive",
        *(("--gzip",) if gzip else ()),
        f"--config={CONFIG_PLACEHOLDER}",
        *mongodump_filters(include, exclude),
        *extra_args,
    )


def native_dump_argv(python: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                     connect_timeout_s: float = 10.0, compression_level: int = 1,
                     parallel_collections: int = 4) -> tuple[str, ...]:
    """Return the argv of the native engine's child process (same contract as mongodump's)."""
    return (
        python, "-m", "backup_exporter.engines.native",
        f"--config={CONFIG_PLACEHOLDER}",
        f"--connect-timeout={connect_timeout_s:g}",
        f"--compression-level={compression_level}",
        f"--parallel-collections={parallel_collections}",
        *(f"--include={pattern}" for pattern in include),
        *(f"--exclude={pattern}" for pattern in exclude),
    )


def mongodump_version_argv(binary: str) -> tuple[str, ...]:
    return (binary, "--version")


def tool_config(uri: str) -> bytes:
    """Return the YAML for mongodump/mongorestore --config holding the connection URI (a JSON string is
    valid YAML and quotes every character safely)."""
    return f"uri: {json.dumps(uri)}\n".encode()


def mongorestore_argv(binary: str, *, config_fd_placeholder: str = CONFIG_PLACEHOLDER,
                      ns_include: Sequence[str] = (), ns_from: Sequence[str] = (),
                      ns_to: Sequence[str] = (), drop: bool = False, dry_run: bool = False) -> tuple[str, ...]:
    """Return the mongorestore argv that reads a gzip archive from stdin.

    The connection string is never part of it: mongorestore reads it from the YAML file named by
    `--config`, whose path execute.Command substitutes for `config_fd_placeholder`. Raises UsageError when
    ns_from and ns_to do not pair up, or a pattern contains the placeholder (it would be substituted).
    """
    if len(ns_from) != len(ns_to):
        raise UsageError(f"ns_from has {len(ns_from)} patterns but ns_to has {len(ns_to)}: "
                         f"they pair up one to one")
    for pattern in (*ns_include, *ns_from, *ns_to):
        if config_fd_placeholder in pattern:
            raise UsageError(f"namespace pattern {pattern!r} contains {config_fd_placeholder!r}")
    argv = [binary, "--archive", "--gzip", f"--config={config_fd_placeholder}"]
    argv += [f"--nsInclude={pattern}" for pattern in ns_include]
    for source, target in zip(ns_from, ns_to, strict=True):
        argv += [f"--nsFrom={source}", f"--nsTo={target}"]
    if drop:
        argv.append("--drop")
    if dry_run:
        argv.append("--dryRun")
    return tuple(argv)
