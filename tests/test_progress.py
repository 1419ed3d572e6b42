"""`run-now`'s progress on a terminal: an estimate from the server, a percentage growing to 100%, an ETA,
and log lines on their own lines; plus the archive counting and the wording it rests on."""

from __future__ import annotations

import fcntl
import gzip
import io
import os
import pty
import random
import re
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import bson
import pyte
import pytest
from bson import Binary
from pymongo import MongoClient

from backup_exporter import archive
from backup_exporter.archive.counting import ArchiveCounter, NamespaceCount
from backup_exporter.archive.writer import ArchiveWriter
from backup_exporter.cli.lifecycle import _read_total
from backup_exporter.cli.progress import Snapshot, describe, describe_collections, describe_read, fraction_done
from backup_exporter.mongo.estimate import NamespaceEstimate, WorkEstimate, estimate_work
from backup_exporter.storage.base import ObjectInfo
from tests.cli_helpers import FAKE_MONGODUMP, base_env
from tests.faultproxy import fault_proxy

GOLDEN_GZ = Path(__file__).parent / "data" / "mongodump-100.8.0-sample.archive.gz"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")
COLUMNS, ROWS = 220, 60


# --- counting the archive -----------------------------------------------------------------------------

def test_counting_an_archive_in_pieces_of_any_size_finds_every_document_and_its_bytes() -> None:
    data = gzip.decompress(GOLDEN_GZ.read_bytes())
    summary = archive.verify_archive(archive.open_archive_stream(GOLDEN_GZ.open("rb")))
    rng = random.Random(7)
    for _ in range(3):
        counter = ArchiveCounter()
        pos = 0
        while pos < len(data):
            size = rng.choice([1, 3, 4, 5, 17, 300, 4096, 70000])
            counter.feed(data[pos:pos + size])
            pos += size
        assert counter.documents == summary.documents
        assert counter.data_bytes == sum(ns.bytes for ns in summary.namespaces.values())
        assert counter.namespaces == counter.namespaces_done == len(summary.namespaces)


def test_counting_finds_every_namespace_s_documents_and_bytes() -> None:
    data = gzip.decompress(GOLDEN_GZ.read_bytes())
    summary = archive.verify_archive(archive.open_archive_stream(GOLDEN_GZ.open("rb")))
    counter = ArchiveCounter()
    for pos in range(0, len(data), 1000):
        counter.feed(data[pos:pos + 1000])
    assert {ns: (c.documents, c.data_bytes, c.done) for ns, c in counter.by_namespace.items()} == {
        ns: (s.documents, s.bytes, True) for ns, s in summary.namespaces.items()}
    assert counter.active() == []


def test_counting_a_multiplexed_archive_tells_which_namespaces_are_under_way() -> None:
    raw = io.BytesIO()
    writer = ArchiveWriter(raw)
    metas = [archive.CollectionMeta(db="shop", collection=c, metadata={"options": {}, "indexes": []})
             for c in ("orders", "users")]
    writer.write_prelude(archive.ArchiveHeader(), metas)
    doc = bson.encode({"x": "y" * 20})
    counter = ArchiveCounter()
    writer.write_documents("shop", "orders", [doc] * 3)
    writer.write_documents("shop", "users", [doc] * 2)  # the segments of two collections interleave
    writer.write_documents("shop", "orders", [doc])
    fed = raw.getvalue()
    counter.feed(fed)
    assert [(c.namespace, c.documents, c.data_bytes) for c in counter.active()] == [
        ("shop.orders", 4, 4 * len(doc)), ("shop.users", 2, 2 * len(doc))]
    writer.end_namespace("shop", "orders")
    counter.feed(raw.getvalue()[len(fed):])
    assert [c.namespace for c in counter.active()] == ["shop.users"]
    assert counter.by_namespace["shop.orders"].done and counter.namespaces_done == 1


def test_counting_stops_quietly_on_bytes_that_are_not_an_archive() -> None:
    counter = ArchiveCounter()
    counter.feed(b"definitely not an archive" * 10)
    assert (counter.documents, counter.data_bytes) == (0, 0)


# --- what the line says ---------------------------------------------------------------------------------

ESTIMATE = WorkEstimate((NamespaceEstimate("shop.orders", 1000, 100_000), NamespaceEstimate("shop.users", 1000,
                                                                                            100_000)))


def snap(**changes: object) -> Snapshot:
    values: dict[str, object] = {"elapsed": 10.0, "documents": 500, "source_bytes": 50_000, "uploaded": 9_000,
                                 "rate": 5_000.0, "collections_done": 0, "estimate_state": "ready",
                                 "estimate": ESTIMATE}
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]


def test_the_line_shows_percentage_documents_bytes_rate_and_eta_of_the_estimate() -> None:
    text = describe(snap())
    assert text.startswith(" 25%  ETA 0m30s  500/2,000 docs  48.8 KiB/195.3 KiB  4.9 KiB/s  0/2 collections")


def test_without_sizes_the_percentage_and_eta_go_by_documents() -> None:
    counts_only = WorkEstimate((NamespaceEstimate("shop.orders", 1000, None),))
    text = describe(snap(estimate=counts_only, documents=250))
    assert text.startswith(" 25%  ETA 0m30s  250/1,000 docs  48.8 KiB  ")


def test_past_the_estimate_the_line_says_so_instead_of_a_percentage() -> None:
    s = snap(documents=2500, source_bytes=250_000)
    assert fraction_done(s) == pytest.approx(1.25)
    text = describe(s)
    assert text.startswith("beyond estimate") and "%" not in text and "ETA unknown" in text


@pytest.mark.parametrize("state", ["pending", "unavailable"])
def test_without_an_estimate_there_is_no_percentage(state: str) -> None:
    text = describe(snap(estimate_state=state, estimate=None))
    assert "%" not in text and "500 docs" in text
    assert text.startswith("estimating the work..." if state == "pending" else "estimate unavailable")


def test_each_collection_under_way_is_shown_against_its_own_estimate_at_most_four() -> None:
    active = [NamespaceCount("shop.orders", 250, 25_000), NamespaceCount("shop.users", 1500, 150_000),
              NamespaceCount("shop.new", 10, 1_000)] + [NamespaceCount(f"db.c{i}", 1, 100) for i in range(3)]
    lines = describe_collections(active, ESTIMATE)
    assert [text for _, text in lines] == [
        "shop.orders   25%  250/1,000 docs  24.4 KiB/97.7 KiB",
        "shop.users  beyond estimate  1,500 docs  146.5 KiB",
        "shop.new  10 docs  1000 B  (no estimate)",
        "db.c0  1 docs  100 B  (no estimate)",
        "and 2 more collection(s) under way"]
    assert [part for part, _ in lines] == [0.25, None, None, None, None]
    assert [text for _, text in describe_collections(active[:1], None)] == ["shop.orders  250 docs  24.4 KiB"]


def test_a_finished_run_shows_100_percent() -> None:
    assert describe(snap(finished=True)).startswith("100%  done")


# --- against SecantusDB under a pseudo-terminal -----------------------------------------------------------

@pytest.fixture(scope="module")
def big_prefix(mongo_client: MongoClient) -> Iterator[str]:  # type: ignore[type-arg]
    """Two collections large enough that the dump lasts several refreshes of the line (about 10 MiB of
    incompressible data, so the compressed archive reaches the sink in several pieces)."""
    prefix = f"pg{uuid.uuid4().hex[:6]}"
    for name, n in (("orders", 12000), ("users", 8000)):
        mongo_client[f"{prefix}_shop"][name].insert_many([{"n": i, "p": Binary(os.urandom(500))} for i in range(n)])
    yield prefix
    mongo_client.drop_database(f"{prefix}_shop")


def test_the_estimate_counts_the_selected_collections_and_their_data_size(
        big_prefix: str, mongo_uri: str) -> None:
    estimate = estimate_work(mongo_uri, include=[f"{big_prefix}_*"])
    assert [ns.namespace for ns in estimate.namespaces] == [f"{big_prefix}_shop.orders", f"{big_prefix}_shop.users"]
    assert estimate.documents == 20000
    assert estimate.size_bytes is not None and 20000 * 500 < estimate.size_bytes < 20000 * 600


def run_on_terminal(argv: Sequence[str], env: Mapping[str, str], timeout: float = 180) -> tuple[int, bytes, str]:
    """Run backupctl with stderr on a pseudo-terminal of COLUMNS x ROWS; return (exit code, what the terminal
    received, stdout)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", *argv],
                            env={**env, "TERM": "xterm-256color"}, stdout=subprocess.PIPE, stderr=follower,
                            stdin=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break  # the terminal closed: the program exited
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return proc.wait(timeout=30), seen, out


def screen_of(raw: bytes) -> list[str]:
    screen = pyte.Screen(COLUMNS, ROWS)
    pyte.ByteStream(screen).feed(raw)
    return [line.rstrip() for line in screen.display if line.strip()]


def local_native_config(tmp_path: Path, include: str) -> Path:
    """Write a configuration: plan 'main', native engine, `include`, into a local directory; the URI from
    the environment (MONGODB_URI)."""
    (tmp_path / "store").mkdir()
    path = tmp_path / "backup.yml"
    path.write_text(f"""storage: {{type: local, path: {tmp_path / 'store'}}}
plans:
  main:
    mongodb_uri: ${{MONGODB_URI}}
    engine: native
    include: ["{include}"]
""")
    return path


def test_on_a_terminal_run_now_shows_a_percentage_growing_to_100_an_eta_and_clean_log_lines(
        big_prefix: str, mongo_uri: str, tmp_path: Path) -> None:
    config = local_native_config(tmp_path, f"{big_prefix}_*")
    # Through a bandwidth-limited proxy the ~10 MiB dump takes a few seconds (it takes one unthrottled), so
    # the line is seen growing and estimating its end.
    with fault_proxy(int(mongo_uri.split(":")[2].split("/")[0]), http=False) as proxy:
        proxy.bandwidth(3 << 20)
        code, raw, out = run_on_terminal(["run-now", "--config", str(config)], base_env(
            MONGODB_URI=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"))
    text = ANSI.sub("\n", raw.decode(errors="replace"))
    assert code == 0, text
    assert out.count("\t") == 2  # NAME, SIZE, SHA256 on stdout, untouched by the progress line
    percentages = [int(p) for p in re.findall(r"(\d+)%  (?:ETA|done)", text)]  # the total line
    assert percentages, text
    assert percentages[-1] == 100
    assert any(p < 100 for p in percentages), "the percentage is seen growing, not only at the end"
    assert percentages == sorted(percentages), percentages
    assert "20,000 docs" in text
    assert re.search(r"ETA \d+m\d+s", text), text
    # Below it, a line per collection being dumped, against that collection's own estimate.
    assert re.search(rf"{big_prefix}_shop\.(orders|users)  +\d+%  [\d,]+/(12,000|8,000) docs", text), text
    # What stays on the screen: the log lines, each on its own line; the progress line is gone.
    lines = screen_of(raw)
    assert any("backup started" in line for line in lines) and any("backup stored" in line for line in lines)
    for line in lines:
        assert LOG_LINE.match(line), f"not a clean log line: {line!r}"
        assert "%" not in line and "ETA" not in line


def test_off_a_terminal_nothing_of_the_progress_line_is_printed(big_prefix: str, mongo_uri: str,
                                                                 tmp_path: Path) -> None:
    config = local_native_config(tmp_path, f"{big_prefix}_shop.users")
    result = subprocess.run([sys.executable, "-m", "backup_exporter.cli.main", "run-now", "--config", str(config)],
                            env=base_env(MONGODB_URI=mongo_uri), text=True, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "%" not in result.stderr and "ETA" not in result.stderr and "\r" not in result.stderr
    assert all(LOG_LINE.match(line) for line in result.stderr.splitlines())


def test_a_read_line_shows_the_part_of_the_recorded_size_read() -> None:
    assert describe_read(25 * 1024, 100 * 1024, 1024.0, 5.0).startswith(" 25%  ETA 1m15s  25.0 KiB/100.0 KiB")
    assert describe_read(120, 100, 10.0, 5.0).startswith("beyond the recorded size")
    assert describe_read(100, 100, 10.0, 5.0, finished=True).startswith("100%  done")


@pytest.fixture(scope="module")
def users_backup(big_prefix: str, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the configuration of a plan whose latest backup holds `<big_prefix>_shop.users` (8000
    documents, about 4 MiB)."""
    config = local_native_config(tmp_path_factory.mktemp("users"), f"{big_prefix}_shop.users")
    made = subprocess.run([sys.executable, "-m", "backup_exporter.cli.main", "run-now", "--config", str(config)],
                          env=base_env(MONGODB_URI=mongo_uri), text=True, capture_output=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return config


def test_on_a_terminal_verify_shows_its_progress_and_leaves_only_its_report(
        users_backup: Path, mongo_uri: str) -> None:
    config = users_backup
    env = base_env(MONGODB_URI=mongo_uri)
    code, raw, out = run_on_terminal(["verify", "--latest", "--config", str(config)], env)
    text = ANSI.sub("\n", raw.decode(errors="replace"))
    assert code == 0, text
    assert ": OK (" in out and "8000 documents" in " ".join(out.split())
    percentages = [int(p) for p in re.findall(r"(\d+)%", text)]
    assert percentages and percentages[-1] == 100 and percentages == sorted(percentages), text
    assert "100%  done" in text
    assert not any("%" in line for line in screen_of(raw)), "the line is cleared at the end"


@pytest.mark.parametrize("engine", ["native", "mongorestore"])
def test_on_a_terminal_restore_shows_the_part_read_an_eta_and_clean_log_lines(
        engine: str, big_prefix: str, users_backup: Path, mongo_uri: str,
        mongo_client: MongoClient, request: pytest.FixtureRequest) -> None:  # type: ignore[type-arg]
    env = base_env(MONGODB_URI=mongo_uri)
    if engine == "mongorestore":
        env = request.getfixturevalue("mongo_tools").path_env(env)
    config = users_backup
    target = f"{big_prefix}_r{engine[:3]}"
    port = int(mongo_uri.split(":")[2].split("/")[0])
    try:
        # Through a bandwidth-limited proxy the ~4 MiB restore takes a few seconds, so the line is seen
        # growing and estimating its end.
        with fault_proxy(port, http=False) as proxy:
            proxy.bandwidth(2 << 20)
            code, raw, out = run_on_terminal(
                ["restore", "--latest", "--config", str(config), "--engine", engine, "--yes",
                 "--to", f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                 "--ns-from", f"{big_prefix}_shop.*", "--ns-to", f"{target}.*"], env)
        text = ANSI.sub("\n", raw.decode(errors="replace"))
        assert code == 0, text
        assert "8000 documents" in out
        assert mongo_client[target]["users"].count_documents({}) == 8000
    finally:
        mongo_client.drop_database(target)
    percentages = [int(p) for p in re.findall(r"(\d+)%  (?:ETA|done)", text)]
    assert percentages and percentages[-1] == 100 and percentages == sorted(percentages), text
    assert any(p < 100 for p in percentages), "the percentage is seen growing, not only at the end"
    assert re.search(r"ETA \d+m\d+s", text), text
    lines = screen_of(raw)
    if engine == "mongorestore":  # mongorestore's own lines pass through the log, above the line
        assert any("mongorestore: " in line for line in lines), lines
    for line in lines:
        assert LOG_LINE.match(line), f"not a clean log line: {line!r}"
        assert "%  ETA" not in line and "%  done" not in line


def test_a_decrypting_read_is_measured_against_the_archive_size_inside() -> None:
    when = datetime.now(UTC)
    plain = ObjectInfo("p/main/2026-01-01T00-00-00Z.archive.gz", 1000, when, {"archive_size": "900"})
    sealed = ObjectInfo("p/main/2026-01-01T00-00-00Z.archive.gz.age", 1000, when, {"archive_size": "900"})
    unrecorded = ObjectInfo("p/main/2026-01-01T00-00-00Z.archive.gz.age", 1000, when)
    assert _read_total(plain, decrypted=True) == 1000
    assert _read_total(sealed, decrypted=True) == 900  # the tee sees the decrypted archive
    assert _read_total(sealed, decrypted=False) == 1000  # verify without --deep reads the stored bytes
    assert _read_total(unrecorded, decrypted=True) == 1000


def test_restore_prints_no_progress_off_a_terminal_nor_with_quiet(users_backup: Path, mongo_uri: str) -> None:
    env = base_env(MONGODB_URI=mongo_uri)
    argv = ["restore", "--latest", "--config", str(users_backup), "--engine", "native", "--dry-run",
            "--to", mongo_uri]
    piped = subprocess.run([sys.executable, "-m", "backup_exporter.cli.main", *argv], env=env, text=True,
                           capture_output=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "8000 documents" in piped.stdout
    assert piped.stderr == ""
    code, raw, out = run_on_terminal([*argv, "--quiet"], env)
    assert code == 0 and "8000 documents" in out, raw
    assert raw == b"", raw


def test_quiet_keeps_the_terminal_free_of_the_progress_line(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    env = base_env(MONGODB_URI="mongodb://127.0.0.1:1/", BACKUP_LOCAL_DIR=str(tmp_path / "store"),
                   BACKUP_ENGINE="mongodump", BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok")
    code, raw, _ = run_on_terminal(["run-now", "--quiet"], env)
    text = raw.decode(errors="replace")
    assert code == 0, text
    assert "docs" not in text and "%" not in text and "\x1b[" not in text
    assert all(LOG_LINE.match(line) for line in screen_of(raw))
