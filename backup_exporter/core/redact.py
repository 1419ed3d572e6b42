"""The one redaction of the project: every text that leaves the process (log line, error message, status
record, metric label, child's stderr copied into a failure) passes through here first.

Two layers: known secret *shapes* (URI passwords of any scheme, percent-encoded or not, password-bearing
query options and MONGODB-AWS session tokens, Azure account keys, SAS signatures, Authorization headers, age
secret keys, PEM private keys) are always masked; and a caller that knows its exact secrets (a parsed URI
password, a push password) passes them too, so a secret that has no recognisable shape is still caught.
tests/test_redact_properties.py states what survives around each shape, under generated inputs.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MAX_MESSAGE = 400

# Keys whose value is a secret wherever a mapping is written out: JSON, a Python dict's repr (an SDK's
# request headers), YAML. A prefix is allowed so that api_token, sas_token, clientSecret, pushPassword match.
_SENSITIVE_KEYS = (
    r"[a-z0-9_\-]*(?:password|passwd|pwd|secret|token)|account_?key|authorization"
    r"|sharedaccesssignature|connection_?string")
# An Authorization value keeps its scheme word ("Bearer ***"), as the header form does.
_SCHEME = r"(?:(?:bearer|basic|sharedkey|token)\s+)?"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "key": "value" and key="value" (JSON, a dict's repr, quoted YAML): the value runs to its closing quote,
    # across backslash escapes.
    (re.compile(rf"""(?i)((["']?)\b(?:{_SENSITIVE_KEYS})\2\s*[:=]\s*(["']){_SCHEME})((?:\\.|(?!\3)[^\\\n])+)"""),
     r"\1" + MASK),
    # The same written inside a JSON string (a dumped mapping in a JSON log line): \"key\": \"value\". The
    # value's escapes are doubled there, so it ends at the first \" that a ',', '}' or ']' (or the end) follows.
    (re.compile(rf"""(?i)(\\(["'])(?:{_SENSITIVE_KEYS})\\\2\s*[:=]\s*\\(["']){_SCHEME})([^\n]+?)(?=\\\3\s*(?:[,}}\]]|$))"""),
     r"\1" + MASK),
    # key: value in YAML, at a line's start (also after a JSON '\n' escape): the plain scalar runs to the end
    # of the line, or to a quote or a backslash that starts a JSON escape other than '\uXXXX' (a non-ASCII
    # character of the value in an ASCII-only JSON line).
    (re.compile(rf"""(?im)((?:^|\\n)[ \t\-]*(?:{_SENSITIVE_KEYS})[ \t]*:[ \t]+{_SCHEME})"""
                r"""((?:\\u[0-9a-f]{4}|[^\s"'\\])(?:\\u[0-9a-f]{4}|[^\r\n"\\])*)"""),
     r"\1" + MASK),
    # An option's value runs to the next '&', ';', whitespace, quote or backslash (a JSON escape such as the
    # '\n' or '\"' after it in a JSON log line stays intact; base64 and percent-encoding hold no backslash).
    # user:password@ in any URI: MongoDB's (mongodb://, mongodb+srv://), a Pushgateway or proxy URL. The
    # password runs to the LAST '@' before the path, so one with an unencoded '@' or ':' is masked whole.
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^\s/?]*@"), r"\1" + MASK + "@"),
    # password-bearing URI and connection-string options (password=, pwd=, tlsCertificateKeyFilePassword=,
    # sslPEMKeyPassword=, sslClientCertificateKeyPassword=, Password= ...)
    (re.compile(r"(?i)\b([a-z_]*(?:password|passwd|pwd)=)[^&;\s'\"\\]+"), r"\1" + MASK),
    # MONGODB-AWS: authMechanismProperties=AWS_SESSION_TOKEN:<token> (':' possibly percent-encoded)
    (re.compile(r"(?i)(AWS_SESSION_TOKEN(?::|=|%3A))[^,&;\s'\"\\]+"), r"\1" + MASK),
    (re.compile(r"(?i)(AccountKey=)[^;\s'\"\\]+"), r"\1" + MASK),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"\\]+"), r"\1" + MASK),
    (re.compile(r"(?i)(\bsig=)[^&;\s'\"\\]+"), r"\1" + MASK),
    (re.compile(r"(?i)(Authorization:\s*\w+\s+)\S+"), r"\1" + MASK),
    # age identities: bech32 (its alphabet has no 1, b, i, o), either case
    (re.compile(r"(?i)AGE-SECRET-KEY-1[02-9ac-hj-np-z]+"), MASK),
    # PEM private keys (PKCS#1/#8, EC, OpenSSH, PGP): the body between BEGIN and END; then a key whose END
    # is missing (a truncated message): everything after BEGIN that a PEM body or header can hold.
    (re.compile(r"(-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY((?: BLOCK)?)-----).*?(-----END \2PRIVATE KEY\3-----)",
                re.DOTALL), r"\1" + MASK + r"\4"),
    (re.compile(r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)[A-Za-z0-9+/=\s\\:,\-]+"), r"\1" + MASK),
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
