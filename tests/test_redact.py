"""The one redaction: every secret shape the project meets is masked, and nothing else is changed. MongoDB
URIs, Azure connection strings, SAS signatures, age and PEM keys are covered by generated inputs in
test_redact_properties.py; the cases here are the shapes those properties do not generate."""

from __future__ import annotations

import pytest

from backup_exporter.core.redact import one_line, redact


@pytest.mark.parametrize(("text", "secret"), [
    ("https://push:hunter2@pushgateway:9091/metrics", "hunter2"),
    ("mongodb://db-0/?authMechanism=PLAIN&password=s3cret&w=1", "s3cret"),
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
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
