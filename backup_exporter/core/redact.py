"""The one redaction of the project: every text that leaves the process (log line, error message, status
record, metric label, child's stderr copied into a failure) passes through here first.

Two layers: known secret *shapes* (URI passwords of any scheme, percent-encoded or not, password-bearing
query options, Azure account keys, SAS signatures, Authorization headers, age secret keys) are always
masked; and a caller that knows its exact secrets (a parsed URI password, a push password) passes them too,
so a secret that has no recognisable shape is still caught.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MAX_MESSAGE = 400

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # user:password@ in any URI: MongoDB's (mongodb://, mongodb+srv://), a Pushgateway or proxy URL.
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@"), r"\1" + MASK + "@"),
    # password-bearing URI and connection-string options
    (re.compile(r"(?i)\b(password|pwd|passwd|tlsCertificateKeyFilePassword|sslPEMKeyPassword)=[^&;\s'\"]+"),
     r"\1=" + MASK),
    (re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"), r"\1" + MASK),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"), r"\1" + MASK),
    (re.compile(r"(?i)(\bsig=)[^&;\s'\"]+"), r"\1" + MASK),
    (re.compile(r"(?i)(Authorization:\s*\w+\s+)\S+"), r"\1" + MASK),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+"), MASK),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` with every known secret shape and each of `secrets` (also percent-decoded and
    percent-encoded) replaced by '***'. Never raises; the rest of the text is left as it was."""
    variants: set[str] = set()
    for secret in secrets:
        if secret:
            variants |= {secret, urllib.parse.unquote(secret), urllib.parse.quote(secret, safe="")}
    for secret in sorted((v for v in variants if v), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def one_line(text: str, secrets: Iterable[str] = (), limit: int = MAX_MESSAGE) -> str:
    """Return `text` redacted, its whitespace folded onto one line, and shortened to `limit` characters."""
    text = " ".join(redact(text, secrets).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mask_uri(uri: str) -> str:
    """Return a URI with any password masked, for display (also for unparsable input)."""
    return redact(uri)
