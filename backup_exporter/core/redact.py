"""Removing secrets from text before it reaches a log, a message or a record."""

from __future__ import annotations

from collections.abc import Iterable

_MAX_MESSAGE = 400


def scrub_secrets(text: str, secrets: Iterable[str]) -> str:
    """Return text with each secret replaced by '***', on one line, shortened to a message's length."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."
