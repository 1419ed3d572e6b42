"""Benchmark of backup_exporter against the real tools, side by side, in one run (issue #12's figures).

Starts SecantusDB (source), a second SecantusDB (restore target) and Azurite on free ports, loads a
database of at least 200 MB of BSON spread over collections of very different sizes (and one a quarter of
that size, for the memory figure), then measures each figure as the median of 3 runs:

  native run-now / plain cursor read            native run-now / mongodump --archive --gzip -j4
  mongodump engine (backupctl gzips) / mongodump --archive --gzip alone
  archive size / mongodump's archive size       Azure upload / SDK upload_blob (max_concurrency 4)
  backupctl restore (native) / mongorestore --archive --gzip
  peak RSS of run-now, 4x larger database / 1x

The real mongodump/mongorestore come from $MONGO_TOOLS_BIN; without them the figures that need them are
listed as not measured (never estimated). With --profile, or when a target is missed, a py-spy profile of
one native run-now is summarised. Results go to docs/benchmarks.md (--no-write: only printed).

    scripts/bench               full run (a few minutes; the machine should be otherwise quiet)
    scripts/bench --quick       ~25 MB instead of ~210 MB, for development
    scripts/bench --json FILE   also save every measured number as JSON

Over 400 lines because it is one script: data loading, one measurement per figure and the report, each a
short function, read top to bottom.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import bson  # noqa: E402
import isal  # noqa: E402
import psutil  # noqa: E402
import pymongo  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from isal import igzip  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from backup_exporter import __version__  # noqa: E402
from backup_exporter.archive import COMPRESSION_LEVELS, GzipStreamWriter  # noqa: E402
from backup_exporter.config import StorageConfig  # noqa: E402
from backup_exporter.storage.factory import open_storage  # noqa: E402
from tests import servers  # noqa: E402

MiB = 1 << 20
MB = 1_000_000
CONTAINER = "bench"
NEVER = "0 3 1 1 *"  # a schedule that does not fire during the benchmark
SAMPLE_INTERVAL = 0.05  # RSS sampling period (s)
WAITS = frozenset({"wait", "recv_into", "_wait_for_tstate_lock", "_run", "select", "sleep", "poll", "get",
                   "readinto", "accept", "read1"})  # leaf functions where a thread waits rather than works
# Collections of very different sizes: shares of the database's BSON bytes.
SHARES = {"orders": 0.46, "events": 0.27, "customers": 0.14, "invoices": 0.08, "products": 0.04,
          "settings": 0.01}
NOTES_MARKER = "<!-- notes below are kept by scripts/bench -->"
TARGETS = {  # figure -> (label, maximum)
    "native_vs_cursor": ("native run-now wall / plain cursor read of the same collections", 1.30),
    "native_vs_mongodump_j4": ("native run-now wall / real mongodump --archive --gzip -j4 wall", 0.40),
    "mongodump_engine_vs_mongodump": ("mongodump engine, backupctl compressing / real mongodump --archive "
                                      "--gzip alone", 0.60),
    "size_vs_mongodump": ("archive size / real mongodump's archive size", 1.10),
    "upload_vs_sdk": ("Azure upload of the same bytes / SDK upload_blob (max_concurrency 4)", 1.05),
    "restore_vs_mongorestore": ("backupctl restore (native) / real mongorestore --archive --gzip", 1.00),
    "rss_4x_vs_1x": ("peak RSS, 4x larger database / 1x", 1.10),
}


@dataclass(frozen=True)
class Sizes:
    base_bytes: int  # BSON of the 1x database; the 4x database holds four times as much
    repeats: int


FULL = Sizes(base_bytes=53 * MB, repeats=3)
QUICK = Sizes(base_bytes=6 * MB, repeats=3)


def say(text: str) -> None:
    print(text, flush=True)


def mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


def describe_collections(loaded: dict[str, Any]) -> str:
    return ", ".join(f"{name} {mb(c['bytes'])}" for name, c in loaded.items())


def median(values: list[float]) -> float:
    return statistics.median(values)


# ------------------------------------------------------------------------------------------ RSS sampling


class RssSampler:
    """Samples the summed RSS of one process and its descendants every SAMPLE_INTERVAL seconds."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rss-{pid}")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        try:
            rss = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            return  # the process has exited
        self.samples.append(rss)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


# ----------------------------------------------------------------------------------------------- data


class DataLoader:
    """Inserts documents of 1-4 KiB with random words and bytes (gzip shrinks them about 2x, not 100x)."""

    def __init__(self, uri: str, seed: int = 20261202) -> None:
        self.client: MongoClient[RawBSONDocument] = MongoClient(uri, document_class=RawBSONDocument)
        self.rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.words = ["".join(self.rng.choices(letters, k=self.rng.randint(3, 10))) for _ in range(3000)]
        self._epoch = datetime(2026, 1, 1, tzinfo=UTC)

    def _doc(self, i: int) -> bytes:
        rng = self.rng
        return bson.encode({
            "_id": i,
            "customer": f"cust-{rng.randrange(1_000_000):06d}",
            "at": self._epoch + timedelta(seconds=rng.randrange(86400 * 365)),
            "amount": round(rng.uniform(1, 5000), 2),
            "status": rng.choice(("open", "paid", "shipped", "cancelled")),
            "tags": rng.sample(self.words[:50], k=rng.randint(0, 6)),
            "text": " ".join(rng.choices(self.words, k=rng.randint(60, 380))),
            "blob": rng.randbytes(rng.randint(64, 1024)),
        })

    def load(self, db: str, total_bytes: int) -> dict[str, Any]:
        """Fill `db` with about total_bytes of BSON split by SHARES; returns docs and bytes per collection."""
        result: dict[str, Any] = {}
        for name, share in SHARES.items():
            want, size, docs = int(total_bytes * share), 0, 0
            while size < want:
                raws = []
                while size < want and len(raws) < 1000:
                    raws.append(self._doc(docs))
                    size += len(raws[-1])
                    docs += 1
                self.client[db][name].insert_many([RawBSONDocument(r) for r in raws], ordered=False)
            self.client[db][name].create_index("customer")
            result[name] = {"docs": docs, "bytes": size}
        return result

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------------------- the bench


class _Counter:
    size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)


@dataclass
class Figure:
    key: str
    label: str
    target: float
    ratio: float | None = None
    detail: str = ""
    missing: str = ""  # why it was not measured

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "NOT MEASURED"
        return "PASS" if self.ratio <= self.target else "MISS"


@dataclass
class Bench:
    sizes: Sizes
    work: Path
    source_uri: str
    target_uri: str
    connection_string: str
    tools: Path | None
    env: dict[str, str]
    config: Path = Path()
    times: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    numbers: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.figures = {k: Figure(k, label, target) for k, (label, target) in TARGETS.items()}
        self.store = self.work / "store"
        self.store.mkdir()

    # ---------------------------------------------------------------------------- helpers

    def tool(self, name: str) -> str:
        assert self.tools is not None
        return str(self.tools / name)

    def timed(self, key: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = action()
        self.times[key].append(time.perf_counter() - started)
        return result

    def backupctl(self, *args: str, log: str) -> tuple[subprocess.Popen[bytes], Path]:
        path = self.work / "logs" / log
        with open(path, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", *args, "--config",
                                     str(self.config)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        return proc, path

    def run_now(self, plan: str) -> dict[str, Any]:
        """Run `backupctl run-now --plan plan`; return wall time, peak RSS of its process tree, archive."""
        started = time.perf_counter()
        proc, log = self.backupctl("run-now", "--plan", plan, "--quiet", log=f"run-now-{plan}.log")
        with RssSampler(proc.pid) as sampler:
            # wait4: the CPU time of backupctl and the dump child it waited for, from the kernel.
            _, status, usage = os.wait4(proc.pid, 0)
            code = proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        output = log.read_text(errors="replace")
        if code != 0:
            raise RuntimeError(f"backupctl run-now --plan {plan} exited {code}:\n{output[-2000:]}")
        lines = re.findall(r"^(\S+\.archive\.gz)\t(\d+)\t[0-9a-f]{64}$", output, re.MULTILINE)
        if not lines:
            raise RuntimeError(f"backupctl run-now printed no archive line:\n{output[-2000:]}")
        name, size = lines[-1]
        return {"wall_s": wall, "peak_rss": sampler.peak, "size": int(size), "path": self.store / name,
                "cpu_s": usage.ru_utime + usage.ru_stime}

    def run_tool(self, argv: list[str], log: str) -> None:
        with open(self.work / "logs" / log, "ab") as out:
            code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  check=False).returncode
        if code != 0:
            raise RuntimeError(f"{argv[0]} exited {code} (see {self.work / 'logs' / log})")

    def empty_target(self) -> None:
        client: MongoClient[dict[str, Any]] = MongoClient(self.target_uri)
        try:
            for name in client.list_database_names():
                if name not in ("admin", "local", "config"):
                    client.drop_database(name)
        finally:
            client.close()

    def fig(self, key: str, numerator: list[float] | float, denominator: list[float] | float,
            detail: str) -> None:
        num = median(numerator) if isinstance(numerator, list) else numerator
        den = median(denominator) if isinstance(denominator, list) else denominator
        figure = self.figures[key]
        figure.ratio = num / den
        figure.detail = detail
        say(f"  {figure.verdict:<4} {figure.label} = {figure.ratio:.2f} (target <= {figure.target:.2f}); "
            f"{detail}")

    def not_measured(self, key: str, why: str) -> None:
        self.figures[key].missing = why
        say(f"  NOT MEASURED: {self.figures[key].label}: {why}")

    # ---------------------------------------------------------------------------- measurements

    def cursor_read(self, db: str) -> None:
        """A plain pymongo read of every collection, RawBSONDocument, nothing written."""
        client: MongoClient[dict[str, Any]] = MongoClient(self.source_uri)
        raw: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
        try:
            def read() -> int:
                n = 0
                for name in sorted(client[db].list_collection_names()):
                    for _ in client[db].get_collection(name, codec_options=raw).find({}):
                        n += 1
                return n
            self.numbers["cursor_docs"] = self.timed("cursor_read", read)
        finally:
            client.close()

    def native(self, plan: str, key: str) -> dict[str, Any]:
        result = self.run_now(plan)
        self.times[key].append(result["wall_s"])
        self.numbers.setdefault(f"{key}_rss", []).append(result["peak_rss"])
        self.numbers.setdefault(f"{key}_cpu", []).append(result["cpu_s"])
        self.numbers[f"{key}_size"] = result["size"]
        self.numbers[f"{key}_path"] = str(result["path"])
        return result

    def mongodump(self, db: str, key: str, *args: str) -> None:
        path = self.work / f"{key}.archive.gz"
        argv = [self.tool("mongodump"), f"--uri={self.source_uri}", f"--db={db}", f"--archive={path}", "--gzip",
                "--quiet", *args]
        self.timed(key, lambda: self.run_tool(argv, f"{key}.log"))
        self.numbers[f"{key}_size"] = path.stat().st_size

    def uploads(self, path: Path, rep: int) -> None:
        # The default block size and concurrency, as a plan that sets neither uses them.
        storage = open_storage(StorageConfig(type="azure", container=CONTAINER,
                                             connection_string=self.connection_string))

        def ours() -> None:
            upload = storage.start_upload(f"bench/ours/{rep}.archive.gz")
            with open(path, "rb") as f:
                while chunk := f.read(MiB):
                    upload.write(chunk)
            upload.commit({"bench": "ours"})

        service = BlobServiceClient.from_connection_string(self.connection_string)

        def sdk() -> None:
            with open(path, "rb") as f:
                service.get_blob_client(CONTAINER, f"bench/sdk/{rep}.bin").upload_blob(
                    f, length=path.stat().st_size, max_concurrency=4, overwrite=True)

        try:
            for key, action in (("upload_ours", ours), ("upload_sdk", sdk))[:: 1 if rep % 2 == 0 else -1]:
                self.timed(key, action)
        finally:
            service.close()

    def restores(self, path: Path, rep: int) -> None:
        def ours() -> None:
            proc, log = self.backupctl("restore", "--plan", "native4x", "--latest", "--to", self.target_uri,
                                       "--yes", "--engine", "native", log="restore-native.log")
            if proc.wait() != 0:
                raise RuntimeError(f"backupctl restore failed: {log.read_text(errors='replace')[-2000:]}")

        def theirs() -> None:
            with open(path, "rb") as stdin, open(self.work / "logs" / "mongorestore.log", "ab") as out:
                code = subprocess.run([self.tool("mongorestore"), f"--uri={self.target_uri}", "--archive",
                                       "--gzip", "--quiet"], stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                                      check=False).returncode
            if code != 0:
                raise RuntimeError(f"mongorestore exited {code}")

        order = (("restore_ours", ours), ("restore_mongorestore", theirs))
        for key, action in order[:: 1 if rep % 2 == 0 else -1]:
            self.empty_target()
            self.timed(key, action)

    # ---------------------------------------------------------------------------- the run

    def run(self, loader: DataLoader) -> None:
        base = self.sizes.base_bytes
        say(f"\nloading bench1x (~{mb(base)}) and bench4x (~{mb(4 * base)} of BSON) ...")
        started = time.perf_counter()
        self.numbers["bench1x"] = loader.load("bench1x", base)
        self.numbers["bench4x"] = loader.load("bench4x", 4 * base)
        bson_4x = sum(c["bytes"] for c in self.numbers["bench4x"].values())
        docs_4x = sum(c["docs"] for c in self.numbers["bench4x"].values())
        self.numbers["bson_4x"], self.numbers["docs_4x"] = bson_4x, docs_4x
        say(f"  loaded in {time.perf_counter() - started:.0f} s; bench4x: {docs_4x:,} documents, {mb(bson_4x)} "
            f"of BSON in {describe_collections(self.numbers['bench4x'])}")

        reps = self.sizes.repeats
        for rep in range(reps):
            say(f"\nround {rep + 1} of {reps}")
            # Alternate the order each round so neither side always runs on a warmer server.
            steps: list[tuple[str, Callable[[], Any]]] = [
                ("cursor read", lambda: self.cursor_read("bench4x")),
                ("native run-now 4x", lambda: self.native("native4x", "native_4x")),
                ("native run-now 1x", lambda: self.native("native1x", "native_1x")),
            ]
            if self.tools is not None:
                steps += [
                    ("mongodump -j4", lambda: self.mongodump("bench4x", "mongodump_j4", "-j", "4")),
                    ("mongodump alone", lambda: self.mongodump("bench4x", "mongodump_alone")),
                    ("mongodump engine", lambda: self.native("dump4x", "mongodump_engine")),
                ]
            for what, step in steps if rep % 2 == 0 else steps[::-1]:
                step()
                key = {"cursor read": "cursor_read", "native run-now 4x": "native_4x",
                       "native run-now 1x": "native_1x", "mongodump -j4": "mongodump_j4",
                       "mongodump alone": "mongodump_alone", "mongodump engine": "mongodump_engine"}[what]
                say(f"  {what:<18} {self.times[key][-1]:7.2f} s")
            archive = Path(self.numbers["native_4x_path"])
            self.uploads(archive, rep)
            say(f"  upload (ours/SDK) {self.times['upload_ours'][-1]:7.2f} s / {self.times['upload_sdk'][-1]:.2f} s"
                f" for {mb(archive.stat().st_size)}")
            if self.tools is not None:
                self.restores(archive, rep)
                say(f"  restore (ours/mongorestore) {self.times['restore_ours'][-1]:.2f} s / "
                    f"{self.times['restore_mongorestore'][-1]:.2f} s")
        self.report_figures()
        self.levels(Path(self.numbers["native_4x_path"]))

    def levels(self, archive: Path) -> None:
        """Recompress the native archive at each ISA-L level: size against mongodump's, and speed."""
        with open(archive, "rb") as f:
            plain = igzip.decompress(f.read())
        reference = self.numbers.get("mongodump_j4_size")
        say(f"\nISA-L levels on the same {mb(len(plain))} archive (compressor thread, one stream):")
        self.numbers["levels"] = {}
        for level in COMPRESSION_LEVELS:
            counter = _Counter()
            started = time.perf_counter()
            gz = GzipStreamWriter(counter, level)
            for i in range(0, len(plain), MiB):
                gz.write(plain[i:i + MiB])
            gz.close()
            seconds = time.perf_counter() - started
            versus = f", {counter.size / reference:.2f} x mongodump's" if reference else ""
            self.numbers["levels"][level] = {"size": counter.size, "mb_per_s": len(plain) / seconds / MB}
            say(f"  level {level}: {mb(counter.size)} ({counter.size / len(plain):.3f} of the archive{versus}), "
                f"{len(plain) / seconds / MB:.0f} MB/s")

    def report_figures(self) -> None:
        t, n = self.times, self.numbers
        say("\nfigures (median of each side's runs):")
        self.fig("native_vs_cursor", t["native_4x"], t["cursor_read"],
                 f"{median(t['native_4x']):.2f} s vs {median(t['cursor_read']):.2f} s")
        if self.tools is None:
            why = "real mongodump/mongorestore not found (set MONGO_TOOLS_BIN)"
            for key in ("native_vs_mongodump_j4", "mongodump_engine_vs_mongodump", "size_vs_mongodump",
                        "restore_vs_mongorestore"):
                self.not_measured(key, why)
        else:
            self.fig("native_vs_mongodump_j4", t["native_4x"], t["mongodump_j4"],
                     f"{median(t['native_4x']):.2f} s vs {median(t['mongodump_j4']):.2f} s")
            self.fig("mongodump_engine_vs_mongodump", t["mongodump_engine"], t["mongodump_alone"],
                     f"{median(t['mongodump_engine']):.2f} s vs {median(t['mongodump_alone']):.2f} s")
            self.fig("size_vs_mongodump", float(n["native_4x_size"]), float(n["mongodump_j4_size"]),
                     f"{mb(n['native_4x_size'])} vs {mb(n['mongodump_j4_size'])} "
                     f"(mongodump engine, ISA-L level 1: {mb(n['mongodump_engine_size'])})")
            self.fig("restore_vs_mongorestore", t["restore_ours"], t["restore_mongorestore"],
                     f"{median(t['restore_ours']):.2f} s vs {median(t['restore_mongorestore']):.2f} s")
        self.fig("upload_vs_sdk", t["upload_ours"], t["upload_sdk"],
                 f"{median(t['upload_ours']):.2f} s vs {median(t['upload_sdk']):.2f} s")
        rss4, rss1 = median(n["native_4x_rss"]), median(n["native_1x_rss"])
        self.fig("rss_4x_vs_1x", rss4, rss1, f"{mb(rss4)} vs {mb(rss1)} (run-now and its dump child)")


# ------------------------------------------------------------------------------------------ profile


def profile_native(bench: Bench, seconds_hint: float) -> str:
    """Record one native run-now with py-spy (all processes, GIL and idle excluded); return the top of
    the self-time table, or why there is none."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not spy:
        return "py-spy is not installed (pip install py-spy): no profile"
    out = bench.work / "profile.txt"
    argv = [spy, "record", "--subprocesses", "--format", "raw", "--rate", "200", "-o", str(out), "--",
            sys.executable, "-m", "backup_exporter.cli.main", "run-now", "--plan", "native4x", "--quiet",
            "--config", str(bench.config)]
    result = subprocess.run(argv, env=bench.env, capture_output=True, check=False, timeout=600 + seconds_hint)
    if result.returncode != 0 or not out.exists():
        return f"py-spy failed (exit {result.returncode}): {result.stderr.decode(errors='replace')[-300:]}"
    own: collections.Counter[str] = collections.Counter()
    per_process: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        process = "dump child" if "engines.native" in stack or "engines/native.py" in stack else "backupctl"
        leaf = frames[-1]  # "function (path/file.py:line)"
        function, _, where = leaf.partition(" (")
        if function.split(".")[-1] in WAITS or leaf.startswith("process "):
            waiting += int(count)
            continue
        own[f"{function} ({where.rstrip(')').split('/')[-1]})"] += int(count)
        per_process[process] += int(count)
        total += int(count)
    if not total:
        return "py-spy recorded no busy samples"
    lines = [f"{count / total * 100:5.1f}%  {name}" for name, count in own.most_common(15)]
    split = ", ".join(f"{name} {count / total * 100:.0f}%" for name, count in per_process.most_common())
    return (f"py-spy --subprocesses, one native run-now: {total} busy samples ({split}); {waiting} more in "
            f"waits (socket reads, queues, locks) left out. Self time by leaf function (GIL-free ISA-L and "
            f"network time count as the calling Python line):\n" + "\n".join(lines))


# ------------------------------------------------------------------------------------------ reports


def machine(tools: Path | None) -> dict[str, str]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def version(binary: str) -> str:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, check=False, timeout=10).stdout
        except OSError:
            return "absent"
        return out.decode(errors="replace").splitlines()[0] if out else "unknown"

    load = os.getloadavg()
    return {
        "nproc": str(os.cpu_count()), "memory": f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB",
        "cpu": cpu, "os": platform.platform(), "python": platform.python_version(),
        "backup_exporter": __version__, "pymongo": pymongo.version, "isal": isal.__version__,
        "mongodump": version(str(tools / "mongodump")) if tools else "absent",
        "mongorestore": version(str(tools / "mongorestore")) if tools else "absent",
        "load_average_at_start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def markdown(bench: Bench, env: dict[str, str], mode: str, seconds: float, profile: str) -> str:
    load = os.getloadavg()
    rows = []
    for f in bench.figures.values():
        value = f"{f.ratio:.2f}" if f.ratio is not None else "not measured"
        rows.append(f"| {f.label} | {value} | ≤ {f.target:.2f} | {f.verdict} | {f.detail or f.missing} |")
    times = "\n".join(f"| {key} | {', '.join(f'{v:.2f}' for v in values)} | {median(values):.2f} |"
                      for key, values in bench.times.items())
    described = "\n".join(f"- {k}: {v}" for k, v in env.items())
    levels = "\n".join(f"| {level} | {mb(v['size'])} | {v['size'] / bench.numbers['mongodump_j4_size']:.2f} | "
                       f"{v['mb_per_s']:.0f} |" if "mongodump_j4_size" in bench.numbers else
                       f"| {level} | {mb(v['size'])} | not measured | {v['mb_per_s']:.0f} |"
                       for level, v in bench.numbers.get("levels", {}).items())
    cpu = "\n".join(f"- `{key}` run-now: CPU {', '.join(f'{c:.1f}' for c in bench.numbers[key + '_cpu'])} s "
                    f"(backupctl and its dump child, from wait4)" for key in ("native_4x", "native_1x",
                                                                             "mongodump_engine")
                    if key + "_cpu" in bench.numbers)
    return f"""# Benchmarks

Measured by `scripts/bench{' --quick' if mode == 'quick' else ''}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC
({seconds:.0f} s). SecantusDB (source), a second SecantusDB (restore target), Azurite, backupctl and the
real tools all ran on this one machine. Each figure is the median of {bench.sizes.repeats} runs per side,
measured side by side in the same run (the order alternates each round).

Data: `bench4x`, {bench.numbers['docs_4x']:,} documents, {mb(bench.numbers['bson_4x'])} of BSON in six
collections of very different sizes ({describe_collections(bench.numbers['bench4x'])});
`bench1x` the same shape at a quarter of the size (memory figure only).
Documents are 1-4 KiB of random words and random bytes. Native engine defaults: ISA-L level 1, 4 readers.

## Machine

{described}
- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}

## Figures

| figure | ratio | target | verdict | raw (median) |
|---|---|---|---|---|
{chr(10).join(rows)}

## Every run (seconds)

| measurement | runs | median |
|---|---|---|
{times}

{cpu}

## ISA-L levels on the same archive

The native 4x archive recompressed in-process at each level (one stream, the compressor thread):

| level | size | / mongodump's archive | MB/s of archive in |
|---|---|---|---|
{levels}

## Profile

```
{profile or 'not recorded (every target met; pass --profile to record one)'}
```
"""


# ------------------------------------------------------------------------------------------------ main


def write_config(path: Path, *, mongo_uri: str, store: Path, tools: Path | None) -> Path:
    """Write the YAML config: local storage in `store`, native plans of bench4x and bench1x, and (with the
    real tools) a mongodump-engine plan of bench4x (defaults: backupctl gzips with ISA-L level 1)."""
    plans: dict[str, list[str]] = {
        "native4x": ["engine: native", 'include: ["bench4x.*"]'],
        "native1x": ["engine: native", 'include: ["bench1x.*"]'],
    }
    if tools is not None:
        plans["dump4x"] = ["engine: mongodump", f'mongodump_path: "{tools / "mongodump"}"',
                           'mongodump_args: ["--db=bench4x"]']
    lines = ["storage:", "  type: local", f'  path: "{store}"', "plans:"]
    for name, extra in plans.items():
        lines += [f"  {name}:", f'    mongodb_uri: "{mongo_uri}"', f'    schedule: "{NEVER}"',
                  f"    prefix: bench-{name}", *(f"    {line}" for line in extra)]
    path.write_text("\n".join(lines) + "\n")
    return path


def find_tools() -> Path | None:
    value = os.environ.get("MONGO_TOOLS_BIN", "")
    if value and all((Path(value) / name).is_file() for name in ("mongodump", "mongorestore")):
        return Path(value).resolve()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~25 MB of BSON instead of ~210 MB")
    parser.add_argument("--json", metavar="FILE", help="save every measured number as JSON")
    parser.add_argument("--profile", action="store_true", help="record a py-spy profile even if all targets pass")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    tools = find_tools()
    env_info = machine(tools)
    work = Path(tempfile.mkdtemp(prefix="backup-exporter-bench-"))
    (work / "logs").mkdir()
    started_servers: list[servers.Server] = []
    loader: DataLoader | None = None
    bench: Bench | None = None
    profile = ""
    begun = time.perf_counter()
    try:
        say(f"backup_exporter benchmark ({'quick' if args.quick else 'full'}): {env_info['nproc']} CPUs "
            f"({env_info['cpu']}), {env_info['memory']}, load {env_info['load_average_at_start']}; work dir {work}")
        if tools is None:
            say("real mongodump/mongorestore not found (MONGO_TOOLS_BIN unset or incomplete): the figures "
                "that compare with them will be reported as not measured")
        source = servers.start_secantus(work / "logs")
        started_servers.append(source)
        target = servers.start_secantus(work / "logs")
        started_servers.append(target)
        azurite = servers.start_azurite(work / "logs", work / "azurite")
        started_servers.append(azurite)
        connection_string = azurite.extra["connection_string"]
        service = BlobServiceClient.from_connection_string(connection_string)
        service.create_container(CONTAINER)
        service.close()
        source_uri = f"mongodb://{source.address}/?directConnection=true"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "AZURE_", "BACKUP"))}
        bench = Bench(sizes, work, source_uri, f"mongodb://{target.address}/?directConnection=true",
                      connection_string, tools, env)
        bench.config = write_config(work / "bench.yml", mongo_uri=source_uri, store=bench.store, tools=tools)
        loader = DataLoader(source_uri)
        bench.run(loader)
        if args.profile or any(f.verdict == "MISS" for f in bench.figures.values()):
            say("\nprofiling one native run-now with py-spy ...")
            profile = profile_native(bench, median(bench.times["native_4x"]))
            say(profile)
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the servers")
        return 128 + (received[0] if received else signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if loader is not None:
            loader.close()
        for server in reversed(started_servers):
            server.stop(grace=5)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - begun
    say(f"\n== summary ({seconds:.0f} s, load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}) ==")
    for f in bench.figures.values():
        value = f"{f.ratio:5.2f}" if f.ratio is not None else "  -  "
        why = f": {f.missing}" if f.missing else ""
        say(f"  {f.verdict:<12} {value}  (target <= {f.target:.2f})  {f.label}{why}")
    if not args.no_write:
        path = REPO / "docs" / "benchmarks.md"
        # Hand-written notes after the marker survive a new run.
        old = path.read_text() if path.exists() else ""
        notes = old[old.index(NOTES_MARKER):] if NOTES_MARKER in old else f"{NOTES_MARKER}\n"
        path.write_text(markdown(bench, env_info, "quick" if args.quick else "full", seconds, profile) + "\n"
                        + notes)
        say(f"written to {path.relative_to(REPO)}")
    if args.json:
        data = {"mode": "quick" if args.quick else "full", "machine": env_info, "seconds": seconds,
                "times": bench.times, "numbers": bench.numbers,
                "figures": {k: f.__dict__ for k, f in bench.figures.items()}}
        Path(args.json).write_text(json.dumps(data, indent=2, default=str) + "\n")
        say(f"results saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
