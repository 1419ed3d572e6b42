"""The one redaction: every secret shape the project meets is masked, and nothing else is changed."""

from __future__ import annotations

import pytest

from backup_exporter.core.redact import mask_uri, one_line, redact


@pytest.mark.parametrize(("text", "secret"), [
    ("mongodb://backup:s3cret@db-0:27017/?authSource=admin", "s3cret"),
    ("mongodb+srv://backup:s3cret@cluster.example.net/app", "s3cret"),
    ("mongodb://backup:p%40ss%3Aw0rd@db-0/", "p%40ss%3Aw0rd"),
    ("https://push:hunter2@pushgateway:9091/metrics", "hunter2"),
    ("mongodb://db-0/?authMechanism=PLAIN&password=s3cret&w=1", "s3cret"),
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0a2V5PT0=;EndpointSuffix=x",
     "c2VjcmV0a2V5PT0="),
    ("BlobEndpoint=https://a.blob;SharedAccessSignature=sv=2022&sig=abcDEF%2B123", "abcDEF%2B123"),
    ("GET https://a.blob.core.windows.net/c?sv=2022-11-02&sig=abcDEF%2B123&se=2027", "abcDEF%2B123"),
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
    ("identity AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQ9 loaded",
     "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQ9"),
])
def test_every_known_secret_shape_is_masked(text: str, secret: str) -> None:
    cleaned = redact(f"failed: {text} (retrying)")
    assert secret not in cleaned
    assert "***" in cleaned
    assert cleaned.startswith("failed: ") and cleaned.endswith(" (retrying)")


def test_an_explicit_secret_is_masked_in_its_encoded_and_decoded_forms() -> None:
    cleaned = redact("pw p@ss:word, encoded p%40ss%3Aword", ["p%40ss%3Aword"])
    assert "p@ss:word" not in cleaned and "p%40ss%3Aword" not in cleaned


def test_text_without_secrets_is_unchanged() -> None:
    text = "mongodb://db-0:27017/admin backed up 12 collections to azure://acct/backups in 3.2 s"
    assert redact(text) == text


def test_one_line_folds_whitespace_and_shortens() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert len(one_line("x" * 1000, limit=50)) == 50


def test_mask_uri_keeps_user_and_host() -> None:
    assert mask_uri("mongodb://backup:s3cret@db-0:27017/") == "mongodb://backup:***@db-0:27017/"
