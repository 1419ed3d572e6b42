"""`run-now`'s Pushgateway and textfile flags, and their merge over the configuration into one PushConfig.

Flags win over the configuration (the YAML `pushgateway:` section, or the BACKUP_PUSHGATEWAY_* variables in
environment-only mode, which the configuration reads). serve/pushgateway.py receives only the finished
PushConfig.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from backup_exporter.cli.options import env_note
from backup_exporter.config import PushConfig
from backup_exporter.core.errors import UsageError
from backup_exporter.serve.pushgateway import RESERVED_LABELS, safe_url

F = TypeVar("F", bound=Callable[..., Any])

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class PushFlags:
    """The push flags as given on the command line (None / empty: not given)."""

    pushgateway: str | None = None
    job: str | None = None
    grouping_key: Sequence[str] = ()
    push_username: str | None = None
    push_password_file: str | None = None
    push_ca_file: str | None = None
    push_cert_file: str | None = None
    push_key_file: str | None = None
    push_timeout: float | None = None
    textfile: str | None = None


def push_options(f: F) -> F:
    """Add the push flags to a Click command; its function receives them as the PushFlags field names."""
    options = [
        click.option("--pushgateway", metavar="URL", help="push the plan's metrics to this Pushgateway"
                     + env_note("BACKUP_PUSHGATEWAY_URL", "pushgateway.url")),
        click.option("--job", metavar="NAME", help="Pushgateway job label [default: mongodb-backup]"
                     + env_note("BACKUP_PUSHGATEWAY_JOB", "pushgateway.job")),
        click.option("--grouping-key", metavar="K=V", multiple=True, help="extra grouping label (repeatable)"
                     " [config: pushgateway.grouping_key]"),
        click.option("--push-username", metavar="USER", help="Pushgateway basic-auth user"
                     + env_note("BACKUP_PUSHGATEWAY_USERNAME", "pushgateway.username")),
        click.option("--push-password-file", metavar="FILE", help="file holding the basic-auth password"
                     + env_note("BACKUP_PUSHGATEWAY_PASSWORD", "pushgateway.password")),
        click.option("--push-ca-file", metavar="FILE", help="CA bundle for the Pushgateway's TLS certificate"
                     + env_note("BACKUP_PUSHGATEWAY_CA_FILE", "pushgateway.ca_file")),
        click.option("--push-cert-file", metavar="FILE", help="client TLS certificate (with --push-key-file)"
                     + env_note("BACKUP_PUSHGATEWAY_CERT_FILE", "pushgateway.cert_file")),
        click.option("--push-key-file", metavar="FILE", help="client TLS key"
                     + env_note("BACKUP_PUSHGATEWAY_KEY_FILE", "pushgateway.key_file")),
        click.option("--push-timeout", type=float, metavar="SECONDS", help="push timeout [default: 10]"
                     + env_note("BACKUP_PUSHGATEWAY_TIMEOUT", "pushgateway.timeout")),
        click.option("--textfile", metavar="PATH", help="also write the metrics for node_exporter's textfile "
                     "collector (atomically)" + env_note("BACKUP_TEXTFILE", "pushgateway.textfile")),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def push_config(base: PushConfig, flags: PushFlags) -> PushConfig:
    """Return the push settings: command-line flags over the configuration (file or environment).

    Raises UsageError for malformed settings, before any backup starts. Files (CA bundle, client
    certificate) are read at push time, so a missing one fails the push (exit 76), not the backup.
    """
    grouping = dict(base.grouping_key)
    for item in flags.grouping_key:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--grouping-key '{item}' is not KEY=VALUE")
        grouping[key.strip()] = value
    for key in grouping:
        if key in RESERVED_LABELS:
            raise UsageError(f"grouping key '{key}' is set by backupctl (use --job for the job label; the plan "
                             "label is the plan's name)")
        if not _LABEL_NAME.match(key) or key.startswith("__"):
            raise UsageError(f"grouping key '{key}' is not a valid Prometheus label name")
    password = base.password
    if flags.push_password_file:
        try:
            password = Path(flags.push_password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"--push-password-file {flags.push_password_file}: {exc.strerror or exc}") from None
    cfg = base.model_copy(update=dict(
        url=flags.pushgateway or base.url,
        job=flags.job or base.job,
        grouping_key=grouping,
        username=flags.push_username or base.username,
        password=password,
        ca_file=flags.push_ca_file or base.ca_file,
        cert_file=flags.push_cert_file or base.cert_file,
        key_file=flags.push_key_file or base.key_file,
        timeout_seconds=base.timeout_seconds if flags.push_timeout is None else flags.push_timeout,
        textfile=flags.textfile or base.textfile,
    ))
    if not cfg.job:
        raise UsageError("--job must not be empty")
    if not cfg.timeout_seconds > 0:
        raise UsageError(f"--push-timeout {cfg.timeout_seconds:g} must be more than 0 seconds")
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise UsageError("--push-cert-file and --push-key-file go together")
    if cfg.url:
        cfg = _credentials_from_url(cfg)
    return cfg


def _credentials_from_url(cfg: PushConfig) -> PushConfig:
    """Check the URL; move 'user:password@' out of it into the basic-auth settings (flags win)."""
    assert cfg.url is not None
    try:
        parts = urllib.parse.urlsplit(cfg.url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"--pushgateway '{safe_url(cfg.url)}' is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--pushgateway '{safe_url(cfg.url)}' is not an http(s) URL")
    if parts.username is None and parts.password is None:
        return cfg
    netloc = parts.netloc.rsplit("@", 1)[1]
    return cfg.model_copy(update=dict(
        url=urllib.parse.urlunsplit(parts._replace(netloc=netloc)),
        username=cfg.username if cfg.username is not None else urllib.parse.unquote(parts.username or ""),
        password=cfg.password if cfg.password is not None else urllib.parse.unquote(parts.password or "")))
