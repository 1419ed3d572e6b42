"""The one redaction under generated inputs (hypothesis): every secret shape the project meets, built from
random parts and embedded in random surrounding text (plain text, a log line, a mongodump error, a JSON log
record), comes out masked, and everything else comes out exactly as it went in.

Each property states the expected output in full: the input with each secret replaced by '***' (the user
name and hosts of a URI, an Azure account name, a SAS's other parameters, a PEM's BEGIN/END lines and a
certificate next to a private key all survive). The run is bounded and repeatable: 200 examples per
property, derandomized, no example database.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from backup_exporter.core.redact import MASK, mask_uri, one_line, redact

bounded = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@dataclass(frozen=True)
class Case:
    """A text holding secrets, what it must become, and the secrets (as they appear in `raw`)."""

    raw: str
    masked: str
    secrets: tuple[str, ...]


# -- surrounding text ---------------------------------------------------------------------------------------

# Any printable character, non-ASCII included; whitespace comes from the separators.
context_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp", "Zs")),
                       max_size=40)
# What stands before a secret in a message: whitespace, a quote, a bracket, a label.
before = st.sampled_from([" ", "\n", "\t", '"', "'", "(", "<", "[", ": ", " uri "])
# What ends a secret in a message: whitespace, possibly after a quote or a bracket (a secret's value runs to
# the next whitespace, quote, '&' or ';'; a URI's password to its last '@').
after = st.sampled_from([" ", "\n", "\t", "\r\n", '" ', "' ", "; ", " (retrying)"])


@dataclass(frozen=True)
class Wrap:
    """A way a secret reaches a message: `apply` puts a text (the raw one, then the masked one) in it."""

    name: str
    apply: Callable[[str], str]

    def __repr__(self) -> str:
        return self.name


@st.composite
def wraps(draw: st.DrawFn) -> Wrap:
    prefix, suffix = draw(context_text), draw(context_text)
    # Context alone must hold no secret shape, or its own masking would be unexpected.
    assume(redact(prefix) == prefix and redact(suffix) == suffix)
    head, tail = draw(before), draw(after)
    kind = draw(st.sampled_from(["plain", "log", "mongodump", "json", "json-ascii"]))
    if kind == "plain":
        return Wrap(f"plain({prefix!r}, {head!r}, {tail!r}, {suffix!r})", lambda s: f"{prefix}{head}{s}{tail}{suffix}")
    if kind == "log":
        return Wrap(kind, lambda s: f"2026-12-04T13:41:49Z error   [main] backup failed: {s}{tail}{suffix}")
    if kind == "mongodump":
        return Wrap(kind, lambda s: f"Failed: can't create session: failed to connect to {s}{tail}: {suffix}")
    ascii_only = kind == "json-ascii"
    return Wrap(f"{kind}({prefix!r}, {suffix!r})", lambda s: json.dumps(
        {"time": "2026-12-04T13:41:49Z", "level": "error", "plan": "main", "message": f"{prefix} {s}{tail}{suffix}"},
        ensure_ascii=ascii_only))


def check(case: Case, wrap: Wrap, explicit: tuple[str, ...] = ()) -> None:
    """Assert that the wrapped case comes out exactly as its masked form, and holds none of its secrets."""
    text, expected = wrap.apply(case.raw), wrap.apply(case.masked)
    for secret in case.secrets:
        # A secret that the surrounding text happens to hold as well cannot be told apart from it.
        assume(secret not in expected)
    cleaned = redact(text, explicit)
    assert cleaned == expected
    for secret in case.secrets:
        assert secret not in cleaned
        assert secret not in one_line(text, explicit, limit=10**6)


# -- MongoDB URIs -------------------------------------------------------------------------------------------

def encoded(text: str) -> str:
    return urllib.parse.quote(text, safe="")


any_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
hostnames = st.from_regex(r"\A[a-z][a-z0-9-]{0,12}(\.[a-z]{2,6}){0,2}\Z")
plain_options = st.lists(st.sampled_from(["authSource=admin", "replicaSet=rs0", "tls=true", "w=majority",
                                          "readPreference=secondary", "appName=backup", "retryWrites=false",
                                          "serverSelectionTimeoutMS=5000", "authMechanism=SCRAM-SHA-256"]),
                         max_size=4, unique=True)


@st.composite
def mongodb_uris(draw: st.DrawFn, with_password: bool = True) -> Case:
    """A MongoDB URI with user and (percent-encoded, any characters) password, one or more hosts, maybe a
    database and options, maybe password-bearing options (a client key's password, an AWS session token)."""
    srv = draw(st.booleans())
    scheme = "mongodb+srv" if srv else "mongodb"
    if srv:
        hosts = draw(hostnames)
    else:
        ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
        hosts = ",".join(h + draw(ports) for h in draw(st.lists(hostnames, min_size=1, max_size=3)))
    user = encoded(draw(any_text))
    password = encoded(draw(any_text))
    database = draw(st.sampled_from(["", "/", "/admin", "/app_db"]))
    raw_options = list(draw(plain_options))
    masked_options = list(raw_options)
    secrets: list[str] = [password] if with_password else []
    if draw(st.booleans()):
        key_password = encoded(draw(any_text))
        raw_options.append(f"tlsCertificateKeyFilePassword={key_password}")
        masked_options.append(f"tlsCertificateKeyFilePassword={MASK}")
        secrets.append(key_password)
    if draw(st.booleans()):
        token = encoded(base64.b64encode(draw(st.binary(min_size=16, max_size=200))).decode())
        other = draw(st.sampled_from(["", "SERVICE_NAME:mongodb,"]))
        raw_options += ["authMechanism=MONGODB-AWS", f"authMechanismProperties={other}AWS_SESSION_TOKEN:{token}"]
        masked_options += ["authMechanism=MONGODB-AWS", f"authMechanismProperties={other}AWS_SESSION_TOKEN:{MASK}"]
        secrets.append(token)
    query = "?" + "&".join(raw_options) if raw_options else ""
    masked_query = "?" + "&".join(masked_options) if masked_options else ""
    database = database or ("/" if query else "")
    userinfo = f"{user}:{password}@" if with_password else f"{user}@"
    masked_userinfo = f"{user}:{MASK}@" if with_password else f"{user}@"
    return Case(f"{scheme}://{userinfo}{hosts}{database}{query}",
                f"{scheme}://{masked_userinfo}{hosts}{database}{masked_query}", tuple(secrets))


AWS_TOKEN_FOUND = Case(  # found by the property: MONGODB-AWS session tokens were not masked at all
    "mongodb://AKIAEXAMPLE:c2VjcmV0@db-0/?authMechanism=MONGODB-AWS"
    "&authMechanismProperties=AWS_SESSION_TOKEN:SESSIONTOKENc2VjcmV0dG9rZW4%3D",
    f"mongodb://AKIAEXAMPLE:{MASK}@db-0/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:{MASK}",
    ("c2VjcmV0", "SESSIONTOKENc2VjcmV0dG9rZW4%3D"))


@bounded
@given(mongodb_uris(), wraps())
@example(AWS_TOKEN_FOUND, Wrap("plain", lambda s: f"connecting to {s} failed"))
def test_a_mongodb_uri_loses_its_passwords_and_keeps_user_hosts_and_options(case: Case, wrap: Wrap) -> None:
    check(case, wrap)


@bounded
@given(mongodb_uris())
def test_mask_uri_shows_a_uri_with_only_its_passwords_masked(case: Case) -> None:
    assert mask_uri(case.raw) == case.masked


@bounded
@given(mongodb_uris(with_password=False), wraps())
def test_a_uri_without_a_password_keeps_its_user_and_is_otherwise_untouched(case: Case, wrap: Wrap) -> None:
    check(case, wrap)


RAW_AT_FOUND = ("p@ss:w@rd", "mongodb://backup:p@ss:w@rd@db-0:27017/admin")  # its tail 'ss:w@rd' leaked


@bounded
@given(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                                      exclude_characters="/?"), max_size=8), min_size=2, max_size=5)
       .flatmap(lambda parts: st.tuples(*[st.sampled_from("@:")] * (len(parts) - 1))
                .map(lambda seps: parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True)))),
       hostnames, wraps())
@example(RAW_AT_FOUND[0], "db-0", Wrap("plain", lambda s: f"invalid URI '{s}' "))
def test_a_password_left_unencoded_with_at_signs_and_colons_is_masked_whole(
        password: str, host: str, wrap: Wrap) -> None:
    """pymongo refuses such a URI, and the refusal may quote it: the password runs to the last '@' of the
    authority, so none of it shows."""
    check(Case(f"mongodb://backup:{password}@{host}:27017/admin", f"mongodb://backup:{MASK}@{host}:27017/admin",
               (password,)), wrap)


@bounded
@given(any_text, mongodb_uris(), st.sampled_from(["auth failed for backup with password {} on {}",
                                                  "{}\n{}", "{} ({})"]))
def test_an_explicit_secret_is_masked_in_every_form_wherever_it_stands(
        password: str, case: Case, template: str) -> None:
    """A caller's known secret (the URI's password, given percent-encoded) is masked also when a tool
    prints it decoded, outside any URI shape."""
    assume("*" not in password)  # the mask itself would show it again
    uri = case.raw.replace(case.secrets[0], encoded(password), 1)
    text = template.format(password, uri)
    cleaned = redact(text, [encoded(password)])
    assert password not in cleaned and encoded(password) not in cleaned
    assert urllib.parse.unquote(encoded(password)) not in cleaned


# -- Azure --------------------------------------------------------------------------------------------------

account_names = st.from_regex(r"\A[a-z0-9]{3,24}\Z")
account_keys = st.binary(min_size=32, max_size=64).map(lambda b: base64.b64encode(b).decode())
signatures = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())


@st.composite
def sas_tokens(draw: st.DrawFn) -> tuple[str, str, str]:
    """Return (token, masked token, signature as written): the signature URL-encoded or not, among the
    other SAS parameters in any order."""
    signature = draw(signatures)
    written = draw(st.sampled_from([encoded(signature), signature]))
    others = ["sv=2022-11-02", "ss=b", "srt=sco", "sp=rwdlacup", "se=2027-01-01T00%3A00%3A00Z",
              "st=2026-12-04T13%3A00%3A00Z", "spr=https"]
    params = draw(st.permutations([*draw(st.lists(st.sampled_from(others), unique=True)), "SIG"]))
    token = "&".join(params)
    return token.replace("SIG", f"sig={written}"), token.replace("SIG", f"sig={MASK}"), written


@st.composite
def azure_connection_strings(draw: st.DrawFn) -> Case:
    """An Azure connection string with an account key or a SAS, its parts in any order."""
    account = draw(account_names)
    parts = [f"DefaultEndpointsProtocol={draw(st.sampled_from(['https', 'http']))}", f"AccountName={account}",
             draw(st.sampled_from(["EndpointSuffix=core.windows.net",
                                   f"BlobEndpoint=https://{account}.blob.core.windows.net/",
                                   f"BlobEndpoint=http://127.0.0.1:10000/{account}"]))]
    if draw(st.booleans()):
        key = draw(account_keys)
        raw_secret, masked_secret, secrets = f"AccountKey={key}", f"AccountKey={MASK}", (key,)
    else:
        token, _, signature = draw(sas_tokens())
        raw_secret, masked_secret, secrets = (f"SharedAccessSignature={token}", f"SharedAccessSignature={MASK}",
                                              (signature,))
    order = draw(st.permutations([*parts, "SECRET"]))
    joined = ";".join(order) + draw(st.sampled_from(["", ";"]))
    return Case(joined.replace("SECRET", raw_secret), joined.replace("SECRET", masked_secret), secrets)


JSON_LINE = Wrap("json", lambda s: json.dumps({"message": f"stderr: {s}\n"}))  # a value before a JSON escape


@bounded
@given(azure_connection_strings(), wraps())
@example(Case("AccountName=acct;AccountKey=c2VjcmV0a2V5PT0=", f"AccountName=acct;AccountKey={MASK}",
              ("c2VjcmV0a2V5PT0=",)), JSON_LINE)  # found: the key's mask ate the '\n' escape after it
def test_an_azure_connection_string_loses_its_key_or_sas_and_keeps_the_rest(case: Case, wrap: Wrap) -> None:
    check(case, wrap)


@bounded
@given(account_names, st.from_regex(r"\A[a-z0-9-]{3,20}\Z"), st.from_regex(r"\A[\w./-]{1,40}\Z"),
       sas_tokens(), st.sampled_from(["url", "token", "?token"]), wraps())
def test_a_sas_signature_is_masked_in_a_url_or_a_bare_token_and_the_other_parameters_stay(
        account: str, container: str, blob: str, sas: tuple[str, str, str], form: str, wrap: Wrap) -> None:
    token, masked, signature = sas
    url = f"https://{account}.blob.core.windows.net/{container}/{blob}?"
    prefix = {"url": url, "token": "", "?token": "?"}[form]
    check(Case(prefix + token, prefix + masked, (signature,)), wrap)


# -- secret-valued keys in a written-out mapping ------------------------------------------------------------

# Keys that name a secret, as the project, the Azure SDK (a request's headers) and operators' files spell them.
SECRET_KEYS = ["AccountKey", "account_key", "accountKey", "password", "Password", "push_password", "api_token",
               "sas_token", "sasToken", "clientSecret", "client_secret", "connection_string"]
SCHEMES = ["Bearer ", "SharedKey acct:", "Basic "]
# Entries beside the secret, which must survive as they are.
OTHERS = {"AccountName": "acct", "container": "backups", "x-ms-version": "2021-08-06", "retries": 3}


@st.composite
def secret_entries(draw: st.DrawFn) -> tuple[str, str, str]:
    """Return (key, value as written, value once masked): an Authorization value keeps its scheme word."""
    if draw(st.booleans()):
        scheme, token = draw(st.sampled_from(SCHEMES)), draw(any_text)
        return "Authorization", scheme + token, scheme.split(" ")[0] + " " + MASK
    return draw(st.sampled_from(SECRET_KEYS)), draw(any_text), MASK


def mappings(key: str, value: object, order: list[str]) -> dict[str, object]:
    both = {**OTHERS, key: value}
    return {k: both[k] for k in order}


@bounded
@given(secret_entries(), st.permutations([*OTHERS, "SECRET"]), st.sampled_from(["json", "json-ascii", "repr"]))
@example(("AccountKey", "c2VjcmV0a2V5PT0=", MASK), ["AccountName", "SECRET"], "json")  # was not masked
@example(("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30", f"Bearer {MASK}"), ["SECRET", "retries"], "json")
def test_a_secret_valued_key_in_json_or_a_dict_repr_is_masked_and_the_other_keys_stay(
        entry: tuple[str, str, str], order: list[str], form: str) -> None:
    key, value, masked = entry
    order = [key if k == "SECRET" else k for k in order]

    def render(v: str) -> str:
        data = mappings(key, v, order)
        return repr(data) if form == "repr" else json.dumps(data, ensure_ascii=form == "json-ascii")

    expected = render(masked)
    if form == "repr":  # repr quotes the value with ' or " by its content; the mask keeps the raw quote
        quote = repr(value)[0]
        expected = render("\0").replace(repr("\0"), quote + masked + quote)
    check(Case(render(value), expected, (value,)), Wrap("as-is", lambda s: s))


# A value that a JSON string can hold twice-encoded and still be told apart: no quote or backslash in it
# (its escapes double, so the mask ends at the first \" followed by ',', '}' or ']').
nested_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\"'"),
                        min_size=1, max_size=30)


@bounded
@given(st.sampled_from(SECRET_KEYS), nested_values, st.permutations([*OTHERS, "SECRET"]), st.booleans())
def test_a_mapping_dumped_into_a_json_log_line_loses_its_secret_value(
        key: str, value: str, order: list[str], ascii_only: bool) -> None:
    order = [key if k == "SECRET" else k for k in order]

    def render(v: str) -> str:
        inner = json.dumps(mappings(key, v, order), ensure_ascii=ascii_only)
        return json.dumps({"level": "error", "message": f"request failed: {inner}"}, ensure_ascii=ascii_only)

    check(Case(render(value), render(MASK), (value,)), Wrap("as-is", lambda s: s))


# A YAML plain scalar: no leading space or quote, no quote, backslash, '#' or line break in it.
yaml_values = st.from_regex(r"\A[\w+/=.:@!$%^&*()\-][\w+/=.:@!$%^&*() \-]{0,40}\Z")


@bounded
@given(st.sampled_from(SECRET_KEYS), yaml_values, st.sampled_from(["", "  ", "  - "]), st.booleans())
def test_a_secret_valued_key_in_yaml_is_masked_to_the_end_of_its_line_also_inside_a_json_log_line(
        key: str, value: str, indent: str, in_json: bool) -> None:
    def render(v: str) -> str:
        text = f"storage:\n  container: backups\n{indent}{key}: {v}\n  account_name: acct\n"
        return json.dumps({"message": f"config:\n{text}"}) if in_json else text

    check(Case(render(value), render(MASK), (value.strip(),)), Wrap("as-is", lambda s: s))


# -- private keys ---------------------------------------------------------------------------------------------

BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
age_keys = st.text(st.sampled_from(BECH32), min_size=58, max_size=58).map(lambda s: "AGE-SECRET-KEY-1" + s)
age_recipients = st.text(st.sampled_from(BECH32.lower()), min_size=58, max_size=58).map(lambda s: "age1" + s)


@bounded
@given(age_keys, age_recipients, st.booleans(), wraps())
@example("AGE-SECRET-KEY-1" + "Q" * 58, "age1" + "q" * 58, True, JSON_LINE)  # found: a lower-case key showed
def test_an_age_identity_is_masked_and_its_public_recipient_stays(
        key: str, recipient: str, lower: bool, wrap: Wrap) -> None:
    key = key.lower() if lower else key
    text = f"# created: 2026-12-04T13:41:49Z\n# public key: {recipient}\n{key}"
    masked = f"# created: 2026-12-04T13:41:49Z\n# public key: {recipient}\n{MASK}"
    check(Case(text, masked, (key, key[len("AGE-SECRET-KEY-1"):])), wrap)


PEM_LABELS = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "OPENSSH PRIVATE KEY",
              "ENCRYPTED PRIVATE KEY", "PGP PRIVATE KEY BLOCK"]


def pem(label: str, der: bytes) -> tuple[str, list[str]]:
    """Return a PEM block of `der` under `label` and its body lines."""
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----", lines


PEM_FOUND = Case(  # found by the property: PEM private keys were not masked at all
    "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "-----END RSA PRIVATE KEY-----",
    f"-----BEGIN RSA PRIVATE KEY-----{MASK}-----END RSA PRIVATE KEY-----",
    ("MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu",))


@st.composite
def private_keys(draw: st.DrawFn) -> Case:
    """A PEM private key of any kind, with a certificate (public, kept) before or after it."""
    label = draw(st.sampled_from(PEM_LABELS))
    key, lines = pem(label, draw(st.binary(min_size=24, max_size=400)))
    cert, _ = pem("CERTIFICATE", draw(st.binary(min_size=24, max_size=200)))
    masked = f"-----BEGIN {label}-----{MASK}-----END {label}-----"
    # A base64 line of a few characters could stand anywhere; the long ones are the key's substance.
    secrets = tuple(line for line in lines if len(line) >= 16)
    if draw(st.booleans()):
        return Case(f"{cert}\n{key}", f"{cert}\n{masked}", secrets)
    return Case(f"{key}\n{cert}", f"{masked}\n{cert}", secrets)


@bounded
@given(private_keys(), wraps())
@example(PEM_FOUND, Wrap("plain", lambda s: f"tls: {s} "))
def test_a_pem_private_key_loses_its_body_and_a_certificate_beside_it_stays(case: Case, wrap: Wrap) -> None:
    check(case, wrap)


@bounded
@given(st.sampled_from(PEM_LABELS), st.binary(min_size=48, max_size=400), st.data(), context_text)
def test_a_truncated_pem_private_key_shows_no_part_of_its_body(
        label: str, der: bytes, data: st.DataObject, prefix: str) -> None:
    """A message cut short (a stderr tail, a 400-character limit) holds a BEGIN line without its END."""
    assume(redact(prefix) == prefix)
    key, lines = pem(label, der)
    begin = f"-----BEGIN {label}-----"
    cut = data.draw(st.integers(len(begin) + 2, len(key) - len(f"-----END {label}-----") - 1))
    shown = key[:cut]
    for text, expected in ((f"{prefix} {shown}", f"{prefix} {begin}{MASK}"),
                           (json.dumps({"message": f"{prefix} {shown}"}),
                            json.dumps({"message": f"{prefix} {begin}{MASK}"}))):
        cleaned = redact(text)
        assert cleaned == expected
        for line in lines:
            if len(line) >= 16:
                assert line[:16] not in cleaned


@pytest.mark.parametrize("text", [
    "mongodb://db-0:27017,db-1:27017/?replicaSet=rs0 backed up 12 collections in 3.2 s",
    "https://acct.blob.core.windows.net/backups/main/2026-12-04T13-41-49Z.archive.gz?comp=blocklist",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUd\n-----END CERTIFICATE-----",
    "# public key: age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
    "signature=ok; assigned=3 passwords_rotated=yes",
    "config.yml: plans.main.password: Input should be a valid string",
    '{"password_file": "/run/secrets/mongo", "sas_token_expiry": "2027-01-01", "tokens": 5}',
    "storage:\n  password_file: /run/secrets/mongo\n  tokens: 5\n",
])
def test_text_near_secret_shapes_but_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text
