"""age keys named by the configuration, checked with pyrage: recipients, recipients files, identity files.

Only public keys are kept; an identity file is read to check it holds an X25519 identity, and its text never
leaves this module (not in Config, not in a message).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyrage


def _lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} file {path}: {getattr(exc, 'strerror', None) or exc}") from None


def recipient(value: Any) -> str:
    """Return the age X25519 recipient `value` ("age1..."), stripped. Raises ValueError."""
    text = str(value).strip()
    try:
        pyrage.x25519.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise ValueError(f"'{text:.70}' is not an age X25519 recipient (age1...: {exc})") from None
    return text


def recipients_in_file(path: Path) -> tuple[list[str], list[str]]:
    """Return (recipients, problems) of a recipients file: one age1... a line, '#' comments, blank lines."""
    found: list[str] = []
    problems: list[str] = []
    try:
        for number, line in enumerate(_lines(path, "recipients"), 1):
            if text := line.split("#", 1)[0].strip():
                try:
                    found.append(recipient(text))
                except ValueError as exc:
                    problems.append(f"line {number}: {exc}")
    except ValueError as exc:
        problems.append(str(exc))
    return found, problems or ([] if found else [f"recipients file {path} holds no recipient"])


def checked_identity_file(value: Any) -> Path:
    """Return the path of a readable file of age X25519 identities (AGE-SECRET-KEY-1...). Raises ValueError
    naming the file, never its content."""
    path = Path(value)
    keys = [line.strip() for line in _lines(path, "identity") if line.strip().startswith("AGE-SECRET-KEY-")]
    if not keys:
        raise ValueError(f"identity file {path} holds no age identity (AGE-SECRET-KEY-1...)")
    for key in keys:
        try:
            pyrage.x25519.Identity.from_str(key)
        except pyrage.IdentityError:
            raise ValueError(f"identity file {path} holds a malformed age identity") from None
    return path
