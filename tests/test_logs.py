"""The log output of a real process: JSON and text lines, and the last-resort secret filter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SECRETS = ("Mongo-Pa55", "Push-Pa55", "QUNDT1VOVEtFWQ==", "sv2020sig", "Bearer-T0ken")

# Every line comes from a library logger, not ours: the filter must catch what nobody scrubbed.
PROGRAM = textwrap.dedent("""
    import logging, sys
    from backup_exporter.system import logs
    logs.setup(sys.argv[1])
    lib = logging.getLogger("some.library")
    lib.warning("connecting to %s", "mongodb://backup:Mongo-Pa55@db-0:27017/?authSource=admin")
    lib.warning("push to http://backup:Push-Pa55@pushgateway:9091/metrics failed")
    lib.warning("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=QUNDT1VOVEtFWQ==;EndpointSuffix=x")
    lib.warning("GET https://acct.blob.core.windows.net/c?sv=2020&sig=sv2020sig&se=2030 failed")
    lib.warning("headers: Authorization: Bearer Bearer-T0ken")
    try:
        raise RuntimeError("boom for mongodb://backup:Mongo-Pa55@db-0:27017/")
    except RuntimeError:
        lib.exception("unexpected")
""")


def run(log_format: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROGRAM, log_format], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout == ""
    return result.stderr.splitlines()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_the_log_whatever_library_wrote_it(log_format: str) -> None:
    lines = run(log_format)
    assert len(lines) == 6  # one line per record: no traceback, even for log.exception
    text = "\n".join(lines)
    for secret in SECRETS:
        assert secret not in text
    # What is left still says what happened and where.
    assert "mongodb://backup:***@db-0:27017/" in text
    assert "http://backup:***@pushgateway:9091/metrics" in text
    assert "AccountKey=***;EndpointSuffix=x" in text
    assert "sig=***&se=2030" in text


def test_json_lines_carry_level_event_and_message() -> None:
    entries = [json.loads(line) for line in run("json")]
    assert [e["level"] for e in entries] == ["warning"] * 5 + ["error"]
    assert entries[0]["message"] == "connecting to mongodb://backup:***@db-0:27017/?authSource=admin"
    assert entries[0]["event"] == "library" and entries[0]["plan"] is None
    assert entries[-1]["error"] == "RuntimeError: boom for mongodb://backup:***@db-0:27017/"
