"""Performance benchmark of backup_exporter against real servers (SecantusDB and Azurite on free ports).

Every figure is measured in this one run, side by side, and printed with its raw numbers:

  1. memory stays flat as the database grows: peak RSS of `backupctl run-now` for a database of S and 4S docs
  2. dump and upload overlap: dump to a file (a), upload that file (b), the real streamed run (c)
  3. a synthetic large archive through AzureStorage: throughput and RSS growth per byte
  4. /metrics latency of `backupctl daemon`, idle and while a backup runs
  5. native engine throughput (docs/s, MB/s)

    scripts/bench               full run (about 3-5 minutes on 2 cores)
    scripts/bench --quick       smaller sizes (about 1-2 minutes)
    scripts/bench --json FILE   also save every figure as JSON
    scripts/bench --strict      exit 1 when a target is missed (default: targets are PASS/WARN lines only)
"""

from __future__ import annotations

import argparse
import http.client
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
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import bson  # noqa: E402
import psutil  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from backup_exporter import __version__  # noqa: E402
from backup_exporter import config as config_module  # noqa: E402
from backup_exporter.config import StorageConfig  # noqa: E402
from backup_exporter.core.cancel import CancelToken  # noqa: E402
from backup_exporter.engines.native import NativeEngine  # noqa: E402
from backup_exporter.operations.run import run_backup  # noqa: E402
from backup_exporter.storage.factory import open_storage  # noqa: E402
from tests import servers  # noqa: E402

MiB = 1 << 20
MB = 1_000_000
TOKEN = "bench-token"  # noqa: S105 - the benchmark daemon's own local API token
CONTAINER = "bench"
DB_NAME = "benchdb"
COLLECTIONS = ("orders", "events", "customers")
SAMPLE_INTERVAL = 0.05  # RSS sampling period (s)
NEVER = "0 3 1 1 *"  # a schedule that does not fire during the benchmark

# Targets (reported as PASS/WARN; only --strict turns a WARN into exit 1).
RSS_GROWTH_RATIO_MAX = 1.3
OVERLAP_MIN = 1.0
STREAM_OVERHEAD_MAX = 1.5
METRICS_P99_BUSY_MAX_MS = 25.0


@dataclass(frozen=True)
class Sizes:
    small_docs: int  # S; the large database has 4S
    synthetic_bytes: int
    repeats: int  # repetitions of the overlap measurement (best of)
    metrics_requests: int


QUICK = Sizes(small_docs=6_000, synthetic_bytes=256 * MiB, repeats=1, metrics_requests=200)
FULL = Sizes(small_docs=30_000, synthetic_bytes=1024 * MiB, repeats=2, metrics_requests=200)


def say(text: str) -> None:
    print(text, flush=True)


def mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


# ------------------------------------------------------------------------------------------ RSS sampling


class RssSampler:
    """Samples RSS and CPU time of one process (and its descendants) every SAMPLE_INTERVAL seconds."""

    def __init__(self, pid: int, include_children: bool = True) -> None:
        self.process = psutil.Process(pid)
        self.include_children = include_children
        self.samples: list[int] = []
        self.cpu_seconds = 0.0
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
            with self.process.oneshot():
                rss = self.process.memory_info().rss
                times = self.process.cpu_times()
                cpu = times.user + times.system
            for child in self.process.children(recursive=True) if self.include_children else []:
                try:
                    rss += child.memory_info().rss
                    child_times = child.cpu_times()
                    cpu += child_times.user + child_times.system
                except psutil.Error:
                    pass
        except psutil.Error:
            return  # the process has exited
        self.samples.append(rss)
        self.cpu_seconds = max(self.cpu_seconds, cpu)

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(SAMPLE_INTERVAL):
                self._sample()
                return

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


# ----------------------------------------------------------------------------------------------- data


class DataLoader:
    """Inserts documents of 1-4 KiB with random text and bytes (gzip shrinks them about 2x, not 100x)."""

    def __init__(self, uri: str, seed: int = 20261127) -> None:
        self.client: MongoClient[RawBSONDocument] = MongoClient(uri, document_class=RawBSONDocument)
        self.rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.words = ["".join(self.rng.choices(letters, k=self.rng.randint(3, 10))) for _ in range(3000)]
        self.docs = 0
        self.raw_bytes = 0
        self.seconds = 0.0
        self._epoch = datetime(2026, 1, 1, tzinfo=UTC)

    def _doc(self, i: int) -> bytes:
        rng = self.rng
        doc = {
            "_id": i,
            "customer": f"cust-{rng.randrange(1_000_000):06d}",
            "at": self._epoch + timedelta(seconds=rng.randrange(86400 * 365)),
            "amount": round(rng.uniform(1, 5000), 2),
            "status": rng.choice(("open", "paid", "shipped", "cancelled")),
            "tags": rng.sample(self.words[:50], k=rng.randint(0, 6)),
            "text": " ".join(rng.choices(self.words, k=rng.randint(60, 380))),
            "blob": rng.randbytes(rng.randint(64, 1024)),
        }
        return bson.encode(doc)

    def grow_to(self, total: int, batch: int = 1000) -> None:
        """Insert documents until the database holds `total` of them."""
        started = time.perf_counter()
        while self.docs < total:
            n = min(batch, total - self.docs)
            raws = [self._doc(self.docs + k) for k in range(n)]
            coll = self.client[DB_NAME][COLLECTIONS[(self.docs // batch) % len(COLLECTIONS)]]
            coll.insert_many([RawBSONDocument(r) for r in raws], ordered=False)
            self.docs += n
            self.raw_bytes += sum(len(r) for r in raws)
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------------------- helpers


class FileSink:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def close(self) -> None:
        self.file.close()


def write_config(path: Path, *, mongo_uri: str, connection_string: str, plans: dict[str, str]) -> Path:
    """Write a YAML config with Azure storage at Azurite and one native plan per (name -> prefix)."""
    body = "".join(f"""  {name}:
    mongodb_uri: "{mongo_uri}"
    schedule: "{NEVER}"
    engine: native
    prefix: {prefix}
""" for name, prefix in plans.items())
    path.write_text(f"""storage:
  type: azure
  container: {CONTAINER}
  connection_string: "{connection_string}"
server:
  api_token: {TOKEN}
plans:
{body}""")
    return path


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Check:
    name: str
    value: str
    target: str
    verdict: str  # PASS | WARN | INFO


@dataclass
class Bench:
    sizes: Sizes
    work: Path
    mongo_uri: str
    connection_string: str
    loader: DataLoader
    env: dict[str, str]
    results: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def check(self, name: str, value: str, target: str, ok: bool | None) -> None:
        verdict = "INFO" if ok is None else ("PASS" if ok else "WARN")
        self.checks.append(Check(name, value, target, verdict))
        say(f"  {verdict}: {name} = {value}" + (f" (target {target})" if target else ""))

    def backupctl(self, *args: str, log_name: str) -> subprocess.Popen[bytes]:
        with open(self.work / "logs" / log_name, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "backup_exporter.cli.main", *args], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.children.append(proc)
        return proc

    # -------------------------------------------------------------------------------- 1. flat memory

    def run_now(self, config: Path, plan: str) -> dict[str, Any]:
        """Run `backupctl run-now` as a subprocess and return its wall time, peak RSS, CPU and archive size."""
        log_name = f"run-now-{plan}.log"
        started = time.perf_counter()
        proc = self.backupctl("run-now", "--config", str(config), "--plan", plan, "--quiet", log_name=log_name)
        with RssSampler(proc.pid) as sampler:
            # wait4 gives the kernel's own peak RSS (ru_maxrss) and CPU time of the child, exactly.
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        output = (self.work / "logs" / log_name).read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"backupctl run-now --plan {plan} exited {proc.returncode}:\n{output[-2000:]}")
        match = re.search(r"^\S+\.archive\.gz\t(\d+)\t[0-9a-f]{64}$", output, re.MULTILINE)
        if not match:
            raise RuntimeError(f"backupctl run-now printed no archive line:\n{output[-2000:]}")
        return {"wall_s": wall, "peak_rss": sampler.peak, "kernel_maxrss": usage.ru_maxrss * 1024,
                "cpu_s": usage.ru_utime + usage.ru_stime, "archive_bytes": int(match.group(1)),
                "samples": len(sampler.samples)}

    def memory_flat(self, config: Path) -> None:
        s = self.sizes.small_docs
        say(f"\n[1] memory vs database size: backupctl run-now (native -> Azurite), {s:,} vs {4 * s:,} docs")
        self.loader.grow_to(s)
        small = self.run_now(config, "mem-small")
        self._print_run("S ", s, small)
        self.loader.grow_to(4 * s)
        large = self.run_now(config, "mem-large")
        self._print_run("4S", 4 * s, large)
        rss_ratio = large["peak_rss"] / small["peak_rss"]
        size_ratio = large["archive_bytes"] / small["archive_bytes"]
        kernel_ratio = large["kernel_maxrss"] / small["kernel_maxrss"]
        say(f"  archive size ratio 4S/S = {size_ratio:.2f}; kernel ru_maxrss ratio = {kernel_ratio:.2f}")
        self.results["memory"] = {"small_docs": s, "large_docs": 4 * s, "small": small, "large": large,
                                  "peak_rss_ratio": rss_ratio, "kernel_maxrss_ratio": kernel_ratio,
                                  "archive_size_ratio": size_ratio}
        self.check("peak RSS ratio 4S/S", f"{rss_ratio:.2f} (archive x{size_ratio:.2f})",
                   f"< {RSS_GROWTH_RATIO_MAX}", rss_ratio < RSS_GROWTH_RATIO_MAX)

    @staticmethod
    def _print_run(label: str, docs: int, r: dict[str, Any]) -> None:
        say(f"  {label} {docs:>8,} docs: archive {mb(r['archive_bytes'])}, wall {r['wall_s']:.2f} s, "
            f"peak RSS {mb(r['peak_rss'])} (sampled {r['samples']}x), kernel maxrss {mb(r['kernel_maxrss'])}, "
            f"CPU {r['cpu_s']:.2f} s ({r['cpu_s'] / r['wall_s']:.2f} cores)")

    # -------------------------------------------------------------------------------- 2. overlap + 5.

    def overlap(self, config: Path) -> None:
        docs = self.loader.docs
        say(f"\n[2] dump/upload overlap on {docs:,} docs ({mb(self.loader.raw_bytes)} BSON), "
            f"best of {self.sizes.repeats}")
        cfg = config_module.load(str(config))
        plan = cfg.plan("overlap")
        storage = open_storage(cfg.storage)
        say(f"  storage: block size {cfg.storage.block_size // MiB} MiB, concurrency {cfg.storage.max_concurrency}")
        dump_path = self.work / "dump.archive.gz"
        times: dict[str, list[float]] = {"dump_to_file": [], "upload_file": [], "streamed": []}
        sizes: dict[str, int] = {}

        def dump_to_file() -> None:
            sink = FileSink(dump_path)
            started = time.perf_counter()
            try:
                NativeEngine(self.mongo_uri).dump(sink, CancelToken())
                sink.file.flush()
                os.fsync(sink.file.fileno())  # the disk, not the page cache, is the honest comparison
            finally:
                sink.close()
            times["dump_to_file"].append(time.perf_counter() - started)
            sizes["file"] = sink.size

        def upload_file(rep: int) -> None:
            started = time.perf_counter()
            upload = storage.start_upload(f"bench/upload-only/{rep}.archive.gz")
            with open(dump_path, "rb") as f:
                while chunk := f.read(MiB):
                    upload.write(chunk)
            upload.commit({"bench": "upload_only"})
            times["upload_file"].append(time.perf_counter() - started)

        def streamed() -> None:
            started = time.perf_counter()
            outcome = run_backup(plan, storage, trigger="bench")
            if outcome.exit_code != 0:
                raise RuntimeError(f"streamed run failed: {outcome.message}")
            times["streamed"].append(time.perf_counter() - started)
            sizes["streamed"] = outcome.size

        try:
            for rep in range(self.sizes.repeats):
                # Alternate the order so neither side always runs on a warm server.
                if rep % 2 == 0:
                    dump_to_file()
                    upload_file(rep)
                    streamed()
                else:
                    streamed()
                    dump_to_file()
                    upload_file(rep)
                say(f"  rep {rep + 1}: dump->file {times['dump_to_file'][-1]:.2f} s, "
                    f"upload file {times['upload_file'][-1]:.2f} s, streamed run {times['streamed'][-1]:.2f} s")
        finally:
            storage.close()
        a, b, c = (min(times[k]) for k in ("dump_to_file", "upload_file", "streamed"))
        overlap_ratio, overhead = (a + b) / c, c / a
        size = sizes["file"]
        say(f"  (a) dump->file {a:.2f} s   (b) upload file {b:.2f} s ({size / b / MB:.1f} MB/s)   "
            f"(c) streamed {c:.2f} s; archive {mb(size)}")
        self.results["overlap"] = {"docs": docs, "archive_bytes": size, "streamed_bytes": sizes["streamed"],
                                   "times_s": times, "a": a, "b": b, "c": c,
                                   "overlap_ratio": overlap_ratio, "stream_overhead": overhead}
        self.check("overlap (a+b)/c", f"{overlap_ratio:.2f} ({a + b:.2f} s sequential vs {c:.2f} s streamed)",
                   f"> {OVERLAP_MIN}", overlap_ratio > OVERLAP_MIN)
        self.check("streaming overhead c/a", f"{overhead:.2f}", f"<= {STREAM_OVERHEAD_MAX}",
                   overhead <= STREAM_OVERHEAD_MAX)

        say("\n[5] native engine throughput (dump to a local file)")
        raw = self.loader.raw_bytes
        self.results["native_throughput"] = {
            "docs": docs, "seconds": a, "docs_per_s": docs / a, "archive_mb_per_s": size / a / MB,
            "bson_mb_per_s": raw / a / MB, "compression_ratio": raw / size,
            "streamed_docs_per_s": docs / c, "streamed_archive_mb_per_s": sizes["streamed"] / c / MB,
            "load_docs_per_s": self.loader.docs / self.loader.seconds}
        t = self.results["native_throughput"]
        self.check("native dump to file", f"{t['docs_per_s']:,.0f} docs/s, {t['archive_mb_per_s']:.1f} MB/s archive "
                   f"({t['bson_mb_per_s']:.1f} MB/s BSON, gzip {t['compression_ratio']:.2f}x)", "", None)
        self.check("native streamed to Azurite", f"{t['streamed_docs_per_s']:,.0f} docs/s, "
                   f"{t['streamed_archive_mb_per_s']:.1f} MB/s archive", "", None)
        say(f"  (test data loaded at {t['load_docs_per_s']:,.0f} docs/s)")

    # ------------------------------------------------------------------------------- 3. synthetic large

    def synthetic(self) -> None:
        total = self.sizes.synthetic_bytes
        scfg = StorageConfig(type="azure", container=CONTAINER, connection_string=self.connection_string)
        say(f"\n[3] synthetic archive: {total / MiB:.0f} MiB of pseudo-random bytes through AzureStorage "
            f"(block size {scfg.block_size // MiB} MiB, concurrency {scfg.max_concurrency}, the config defaults)")
        pool = random.Random(7).randbytes(64 * MiB)  # noqa: S311 - incompressible filler, not cryptography
        storage = open_storage(scfg)
        name = "bench/synthetic/large.archive.gz"
        me = psutil.Process()
        try:
            storage.ping()
            baseline = me.memory_info().rss
            written = 0
            chunk = MiB
            offset = 0
            started = time.perf_counter()
            half_index = 0
            # Our own RSS only: the servers are our children and Azurite buffers what it receives.
            with RssSampler(os.getpid(), include_children=False) as sampler:
                upload = storage.start_upload(name)
                while written < total:
                    n = min(chunk, total - written)
                    upload.write(pool[offset : offset + n])
                    written += n
                    offset = (offset + 7 * chunk + 4096) % (len(pool) - chunk)  # never the same run of bytes
                    if not half_index and written >= total // 2:
                        half_index = len(sampler.samples)
                upload.commit({"bench": "synthetic"})
            elapsed = time.perf_counter() - started
            stored = storage.stat(name).size
            storage.delete([name])
        finally:
            storage.close()
        if stored != total:
            raise RuntimeError(f"synthetic upload stored {stored} bytes, expected {total}")
        growth = max(0, sampler.peak - baseline)
        first_half = max(0, max(sampler.samples[:half_index], default=baseline) - baseline)
        second_half = max(0, max(sampler.samples[half_index:], default=baseline) - baseline)
        # The upload's own model: block size x (in flight + the one being filled); allow 2x for the copies made
        # while cutting a block and for the allocator keeping freed blocks.
        bound = 2 * scfg.block_size * (scfg.max_concurrency + 1)
        self.results["synthetic"] = {"bytes": total, "seconds": elapsed, "mb_per_s": total / elapsed / MB,
                                     "baseline_rss": baseline, "peak_rss": sampler.peak, "rss_growth": growth,
                                     "growth_first_half": first_half, "growth_second_half": second_half,
                                     "growth_per_byte": growth / total, "growth_bound": bound,
                                     "block_size": scfg.block_size, "max_concurrency": scfg.max_concurrency}
        say(f"  {mb(total)} in {elapsed:.2f} s; RSS baseline {mb(baseline)}, peak {mb(sampler.peak)}, "
            f"growth {mb(growth)} (first half {mb(first_half)}, second half {mb(second_half)})")
        self.check("synthetic upload throughput", f"{total / elapsed / MB:.1f} MB/s", "", None)
        flat = second_half <= first_half + scfg.block_size
        self.check("RSS growth / bytes uploaded", f"{growth / total:.4f} ({mb(growth)} for {mb(total)})",
                   f"growth <= {mb(bound)} = 2 x block x (concurrency+1), not rising in the 2nd half",
                   growth <= bound and flat)

    # ---------------------------------------------------------------------------------- 4. /metrics

    def metrics_latency(self, config: Path, port: int) -> None:
        n = self.sizes.metrics_requests
        say(f"\n[4] /metrics latency of backupctl daemon ({self.loader.docs:,} docs, native -> Azurite)")
        proc = self.backupctl("daemon", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                              log_name="daemon.log")
        url = f"http://127.0.0.1:{port}"
        in_progress = re.compile(r'^backup_in_progress\{plan="daemon"\} (\S+)$', re.MULTILINE)
        # Each tick scrapes twice: on a kept-alive connection (as Prometheus does) and on a fresh one.
        samples: dict[str, dict[str, list[float]]] = {p: {"keepalive": [], "fresh": []} for p in ("idle", "busy")}
        try:
            servers.wait_until(lambda: servers.http_ok(f"{url}/healthz"), 60, "daemon /healthz")
            keepalive = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def scrape(conn: http.client.HTTPConnection) -> tuple[float, bool]:
                started = time.perf_counter()
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    raise RuntimeError(f"/metrics answered HTTP {response.status}")
                match = in_progress.search(body.decode())
                return elapsed, bool(match and float(match.group(1)) >= 1)

            def tick(phase: str) -> bool:
                elapsed, running = scrape(keepalive)
                fresh_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    fresh_elapsed, fresh_running = scrape(fresh_conn)
                finally:
                    fresh_conn.close()
                if phase == "idle" and (running or fresh_running):
                    raise RuntimeError("a backup is running although none was started")
                if phase == "busy" and running and fresh_running:
                    samples[phase]["keepalive"].append(elapsed)
                    samples[phase]["fresh"].append(fresh_elapsed)
                elif phase == "idle":
                    samples[phase]["keepalive"].append(elapsed)
                    samples[phase]["fresh"].append(fresh_elapsed)
                return running or fresh_running

            # Ticks are paced on a fixed grid so the busy samples cover the whole run, not its first second.
            expected_run = float(self.results.get("overlap", {}).get("c", 10.0))
            pace = min(0.1, max(0.01, expected_run / n))
            with RssSampler(proc.pid) as idle_rss:
                grid = time.perf_counter()
                for k in range(n):
                    tick("idle")
                    time.sleep(max(0.0, grid + (k + 1) * pace - time.perf_counter()))

            status, answer = self._post_run(port)
            if status != 202:
                raise RuntimeError(f"POST /api/v1/plans/daemon/run answered HTTP {status}: {answer}")
            seen_running = False
            run_started = time.perf_counter()
            deadline = run_started + 600
            with RssSampler(proc.pid) as busy_rss:
                k = 0
                while time.perf_counter() < deadline:
                    if tick("busy"):
                        seen_running = True
                    elif seen_running or self._finished(url):
                        break
                    k += 1
                    time.sleep(max(0.0, run_started + k * pace - time.perf_counter()))
            run_seconds = time.perf_counter() - run_started
            keepalive.close()
            outcome = self._last_outcome(url)
            if outcome.get("result") != "success":
                raise RuntimeError(f"the daemon's run did not succeed: {outcome}")
            if not samples["busy"]["keepalive"]:
                raise RuntimeError(f"no /metrics request fell inside the run (outcome {outcome})")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

        def stats(values: list[float]) -> dict[str, float]:
            return {"count": len(values), "p50_ms": percentile(values, 50) * 1000,
                    "p99_ms": percentile(values, 99) * 1000, "max_ms": max(values) * 1000,
                    "mean_ms": statistics.fmean(values) * 1000}

        table = {phase: {kind: stats(v) for kind, v in kinds.items()} for phase, kinds in samples.items()}
        cpu = busy_rss.cpu_seconds - idle_rss.cpu_seconds
        self.results["metrics_latency"] = {
            **table, "pace_s": pace, "run_seconds": run_seconds, "daemon_idle_peak_rss": idle_rss.peak,
            "daemon_busy_peak_rss": busy_rss.peak, "daemon_busy_cpu_s": cpu, "archive_bytes": outcome.get("size")}
        for phase in ("idle", "busy"):
            for kind in ("keepalive", "fresh"):
                st = table[phase][kind]
                say(f"  {phase:<4} {kind:<9}: {st['count']:>3} requests, p50 {st['p50_ms']:7.2f} ms, "
                    f"p99 {st['p99_ms']:7.2f} ms, max {st['max_ms']:7.2f} ms")
        say(f"  daemon: peak RSS idle {mb(idle_rss.peak)}, during the run {mb(busy_rss.peak)}; "
            f"run {run_seconds:.1f} s using {cpu:.1f} s CPU ({cpu / run_seconds:.2f} cores)")
        for kind, label in (("keepalive", "kept-alive connection"), ("fresh", "new connection")):
            idle_p99, busy_p99 = table["idle"][kind]["p99_ms"], table["busy"][kind]["p99_ms"]
            self.results["metrics_latency"][f"p99_ratio_{kind}"] = busy_p99 / idle_p99
            self.check(f"/metrics p99 busy/idle, {label}",
                       f"{busy_p99 / idle_p99:.2f} ({busy_p99:.2f} ms vs {idle_p99:.2f} ms)", "", None)
            self.check(f"/metrics p99 during a backup, {label}", f"{busy_p99:.2f} ms",
                       f"< {METRICS_P99_BUSY_MAX_MS:.0f} ms", busy_p99 < METRICS_P99_BUSY_MAX_MS)

    @staticmethod
    def _post_run(port: int) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/api/v1/plans/daemon/run", body=b"",
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Length": "0"})
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    @staticmethod
    def _status(url: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{url}/api/v1/status", timeout=10) as r:  # noqa: S310 - local
            data: dict[str, Any] = json.loads(r.read())
        return data

    def _finished(self, url: str) -> bool:
        """Whether the API run already finished (a run so short that no scrape saw it in progress)."""
        return any(run.get("state") == "finished" for run in self._status(url).get("runs", []))

    def _last_outcome(self, url: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = [r for r in self._status(url).get("runs", []) if r.get("state") == "finished"]
            if runs:
                outcome: dict[str, Any] = runs[-1]
                return outcome
            time.sleep(0.2)
        return {}


# ------------------------------------------------------------------------------------------------ main


def summary(bench: Bench, total_seconds: float) -> None:
    say(f"\n== summary ({total_seconds:.0f} s) ==")
    width = max(len(c.name) for c in bench.checks)
    vwidth = min(60, max(len(c.value) for c in bench.checks))
    for c in bench.checks:
        say(f"  {c.verdict:<4}  {c.name:<{width}}  {c.value:<{vwidth}}  {c.target}")


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total, "backup_exporter": __version__,
            "time": datetime.now(UTC).isoformat()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about 1-2 minutes")
    parser.add_argument("--json", metavar="FILE", help="save every measured figure as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--docs", type=int, metavar="S", help="documents of the small database (large: 4S)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.docs:
        sizes = Sizes(args.docs, sizes.synthetic_bytes, sizes.repeats, sizes.metrics_requests)

    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicitly, so Ctrl-C works even when started with SIGINT ignored (e.g. from a background job).
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="backup-exporter-bench-"))
    (work / "logs").mkdir()
    started_servers: list[servers.Server] = []
    bench: Bench | None = None
    loader: DataLoader | None = None
    begun = time.perf_counter()
    try:
        say(f"backup_exporter benchmark ({'quick' if args.quick else 'full'}): {os.cpu_count()} CPUs, "
            f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB RAM, Python {platform.python_version()}; "
            f"work dir {work}")
        mongo = servers.start_secantus(work / "logs")
        started_servers.append(mongo)
        azurite = servers.start_azurite(work / "logs", work / "azurite")
        started_servers.append(azurite)
        connection_string = azurite.extra["connection_string"]
        service = BlobServiceClient.from_connection_string(connection_string)
        service.create_container(CONTAINER)
        service.close()
        mongo_uri = f"mongodb://{mongo.address}/?directConnection=true"
        loader = DataLoader(mongo_uri)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "AZURE_", "BACKUP"))}
        bench = Bench(sizes, work, mongo_uri, connection_string, loader, env)
        config = write_config(work / "bench.yml", mongo_uri=mongo_uri, connection_string=connection_string,
                              plans={"mem-small": "bench-mem-s", "mem-large": "bench-mem-l",
                                     "overlap": "bench-overlap", "daemon": "bench-daemon"})
        say(f"SecantusDB at {mongo.address}, Azurite at {azurite.address}")
        bench.memory_flat(config)
        bench.overlap(config)
        bench.metrics_latency(config, servers.free_port())
        bench.synthetic()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the servers")
        return 128 + (received[0] if received else signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in bench.children if bench else []:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if loader is not None:
            loader.close()
        for server in reversed(started_servers):
            server.stop(grace=5)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - begun
    summary(bench, total)
    if args.json:
        data = {"mode": "quick" if args.quick else "full", "environment": environment(), "seconds": total,
                "results": bench.results, "checks": [c.__dict__ for c in bench.checks]}
        Path(args.json).write_text(json.dumps(data, indent=2, default=str) + "\n")
        say(f"results saved to {args.json}")
    warned = [c for c in bench.checks if c.verdict == "WARN"]
    return 1 if args.strict and warned else 0


if __name__ == "__main__":
    sys.exit(main())
