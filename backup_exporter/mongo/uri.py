"""Pure facts about a MongoDB connection string: its hosts and the secrets it carries (no network I/O)."""

from __future__ import annotations

import urllib.parse

from pymongo.uri_parser import parse_uri


def uri_parts(uri: str) -> tuple[list[str], list[str]]:
    """Return (host:port list, secrets to hide) of a MongoDB URI without any network I/O.

    pymongo's parse_uri normalises plain URIs; mongodb+srv URIs are split by hand because parse_uri would
    resolve their DNS records.
    """
    secrets: list[str] = [uri]
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hostpart = netloc.rpartition("@")
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        if password:
            secrets += [password, urllib.parse.unquote(password)]
    hosts = [h for h in hostpart.split(",") if h]
    if uri.startswith("mongodb://"):
        try:
            parsed = parse_uri(uri, validate=False)
            hosts = [f"{host}:{port}" for host, port in parsed["nodelist"]]
            if parsed.get("password"):
                secrets.append(str(parsed["password"]))
        except Exception:  # noqa: S110 - a bad URI keeps the hand-split hosts; the client will report it
            pass
    return hosts or ["unknown"], secrets


def render_hosts(uri: str) -> str:
    """Return the URI's hosts as comma-joined host:port, never credentials."""
    return ",".join(uri_parts(uri)[0])



def uri_secrets(uri: str) -> list[str]:
    """Return what must never leave the process about `uri`: the URI itself and its password."""
    return uri_parts(uri)[1]
