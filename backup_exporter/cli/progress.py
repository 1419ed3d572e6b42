"""The live progress lines of `run-now` and `verify` on a terminal (stderr), drawn with rich.

Before the dump the work is estimated from the server's stats (mongo/estimate.py, in a thread, so a slow or
unreachable server never delays the run); the line then shows the percentage of source bytes read, the
documents and source bytes done of the estimate, the source throughput and an ETA. Without an estimate it
says "estimate unavailable", and past it "beyond estimate", rather than a wrong percentage. Log lines are
printed above the line (rich clears it, prints the line, draws it again), and it is cleared when the run
ends. `verify` shows the bytes read of the blob's recorded size the same way. Nothing here runs when stderr
is not a terminal.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Self

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from backup_exporter.cli.format import human_age, human_bytes
from backup_exporter.config import PlanConfig
from backup_exporter.core.errors import BackupError
from backup_exporter.mongo.estimate import WorkEstimate, estimate_work
from backup_exporter.operations.run import Progress

log = logging.getLogger(__name__)

EstimateState = Literal["pending", "ready", "unavailable"]
_RATE_WINDOW_SECONDS = 5.0
_BAR_WIDTH = 20


@dataclass(frozen=True)
class Snapshot:
    """What the line shows at one moment."""

    elapsed: float
    documents: int
    source_bytes: int
    uploaded: int
    rate: float | None  # source bytes per second, recently; None before there is a measure
    collections_done: int
    estimate_state: EstimateState
    estimate: WorkEstimate | None
    finished: bool = False


def fraction_done(s: Snapshot) -> float | None:
    """Return the part of the estimated work done (above 1: beyond the estimate), or None without a measure.

    Source bytes when the estimate knows the data size, else documents.
    """
    if s.estimate_state != "ready" or s.estimate is None:
        return None
    size = s.estimate.size_bytes
    if size:
        return s.source_bytes / size
    if s.estimate.documents:
        return s.documents / s.estimate.documents
    return math.inf if s.documents or s.source_bytes else 0.0  # an empty estimate


def describe(s: Snapshot) -> str:
    """Return the text of the progress line (the bar is drawn beside it)."""
    rate = f"{human_bytes(s.rate)}/s" if s.rate is not None else "-/s"
    tail = f"uploaded {human_bytes(s.uploaded)}  elapsed {human_age(s.elapsed)}"
    done = f"{s.documents:,} docs  {human_bytes(s.source_bytes)}"
    fraction = fraction_done(s)
    estimate = s.estimate
    if s.finished:
        return f"100%  done  {done}  {rate}  {tail}"
    if fraction is None or estimate is None:
        why = "estimating the work..." if s.estimate_state == "pending" else "estimate unavailable"
        return f"{why}  {done}  {rate}  {tail}"
    collections = f"{s.collections_done}/{len(estimate.namespaces)} collections"
    if fraction > 1:
        size = f" (estimated {human_bytes(estimate.size_bytes)})" if estimate.size_bytes else ""
        return (f"beyond estimate  {s.documents:,} docs (estimated {estimate.documents:,})  "
                f"{human_bytes(s.source_bytes)}{size}  {rate}  ETA unknown  {collections}  {tail}")
    eta = "ETA -"
    if estimate.size_bytes and s.rate:
        eta = f"ETA {human_age(math.ceil((estimate.size_bytes - s.source_bytes) / s.rate))}"
    elif not estimate.size_bytes and s.documents and s.elapsed > 0:  # no sizes: by documents per second
        eta = f"ETA {human_age(math.ceil((estimate.documents - s.documents) * s.elapsed / s.documents))}"
    size = f"/{human_bytes(estimate.size_bytes)}" if estimate.size_bytes else ""
    return (f"{math.floor(fraction * 100):3d}%  {eta}  {s.documents:,}/{estimate.documents:,} docs  "
            f"{human_bytes(s.source_bytes)}{size}  {rate}  {collections}  {tail}")


class EstimateTask:
    """Estimates a plan's work in a thread; `progress.estimate` is set when it is known."""

    def __init__(self, plan: PlanConfig, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.state: EstimateState = "pending"
        self._thread = threading.Thread(target=self._run, name="estimate", daemon=True)

    def start(self) -> EstimateTask:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.progress.estimate = estimate_work(self.plan.mongodb_uri, self.plan.include, self.plan.exclude,
                                                   self.plan.connect_timeout_seconds)
            self.state = "ready"
        except BackupError as exc:  # the run itself reports an unreachable server; here it only costs the %
            log.debug("no estimate of the work: %s", exc.message)
            self.state = "unavailable"
        except Exception:
            log.debug("no estimate of the work", exc_info=True)
            self.state = "unavailable"


class _AboveTheLine(io.TextIOBase):
    """A text stream for log handlers: each complete line is printed above the live line, unchanged."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._buffer = (self._buffer + text).split("\n")
        for line in lines:
            self._console.out(line, highlight=False)
        return len(text)

    def flush(self) -> None:
        return None


class _Rate:
    """Bytes per second over the last few seconds of samples."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, total: int) -> float | None:
        """Record `total` bytes at `now`; return the recent rate, or None before half a second of samples."""
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[0][0] > _RATE_WINDOW_SECONDS:
            self._samples.popleft()
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 0.5 else None


class LiveLine:
    """While the `with` block runs: draws `line()` at the bottom of the terminal behind `console`, prints
    log lines above it, and clears it at the end. Call `finish()` after success to draw the final 100%
    before it is cleared. Subclasses say what the line shows."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4) -> None:
        self.console = console or Console(file=sys.stderr, highlight=False)
        self.finished = False
        self._refresh_per_second = refresh_per_second
        self._live: Live | None = None  # made on entry: rich renders once on construction
        self._rebound: list[tuple[logging.StreamHandler[Any], Any]] = []

    def line(self) -> tuple[float | None, str]:
        """Return (part done, for the bar, or None when unknown; the text beside the bar)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._live = Live(console=self.console, get_renderable=self._render,
                          refresh_per_second=self._refresh_per_second, transient=True, redirect_stdout=False,
                          redirect_stderr=True)
        self._live.start()
        writer = _AboveTheLine(self.console)
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and stream in (sys.__stderr__, self.console.file):
                self._rebound.append((handler, handler.setStream(writer)))
        return self

    def finish(self) -> None:
        self.finished = True
        if self._live is not None:
            self._live.refresh()

    def __exit__(self, *_: object) -> None:
        if self._live is not None:
            self._live.stop()  # first: a log line from here on prints as usual, with no line left to clear
        for handler, stream in self._rebound:
            handler.setStream(stream)
        self._rebound.clear()

    def _render(self) -> RenderableType:
        fraction, text = self.line()
        if self.finished:
            bar = ProgressBar(total=1, completed=1, width=_BAR_WIDTH)
        elif fraction is None:
            bar = ProgressBar(total=None, width=_BAR_WIDTH)  # pulsing: there is nothing to measure against
        else:
            bar = ProgressBar(total=1, completed=min(1.0, fraction), width=_BAR_WIDTH)
        grid = Table.grid(padding=(0, 1))
        grid.add_row(bar, Text(text, no_wrap=True, overflow="ellipsis"))
        return grid


class RunProgressLine(LiveLine):
    """The line of a backup run: `progress` against the estimate of `estimate`."""

    def __init__(self, progress: Progress, estimate: EstimateTask, console: Console | None = None,
                 refresh_per_second: float = 4) -> None:
        super().__init__(console, refresh_per_second)
        self.progress = progress
        self.estimate = estimate
        self._rate = _Rate()

    def snapshot(self) -> Snapshot:
        p = self.progress
        now = time.time()
        counted = p.archive
        rate = self._rate.sample(now, counted.data_bytes)
        return Snapshot(elapsed=now - p.started, documents=counted.documents, source_bytes=counted.data_bytes,
                        uploaded=p.uploaded, rate=rate, collections_done=counted.namespaces_done,
                        estimate_state=self.estimate.state, estimate=p.estimate, finished=self.finished)

    def line(self) -> tuple[float | None, str]:
        s = self.snapshot()
        return fraction_done(s), describe(s)


def describe_read(done: int, total: int, rate: float | None, elapsed: float, finished: bool = False) -> str:
    """Return the text of a read's progress line: `done` of `total` bytes (the blob's recorded size)."""
    speed = f"{human_bytes(rate)}/s" if rate is not None else "-/s"
    tail = f"{speed}  elapsed {human_age(elapsed)}"
    if finished:
        return f"100%  done  {human_bytes(done)}  {tail}"
    if total <= 0 or done > total:
        return f"beyond the recorded size  {human_bytes(done)} of {human_bytes(total)}  {tail}"
    eta = f"ETA {human_age(math.ceil((total - done) / rate))}" if rate else "ETA -"
    return f"{math.floor(100 * done / total):3d}%  {eta}  {human_bytes(done)}/{human_bytes(total)}  {tail}"


class ReadProgressLine(LiveLine):
    """The line of reading a stored backup of `total` bytes (verify): feed each chunk read to `add`."""

    def __init__(self, total: int, console: Console | None = None, refresh_per_second: float = 4) -> None:
        super().__init__(console, refresh_per_second)
        self.total = total
        self.done = 0
        self.started = time.time()
        self._rate = _Rate()

    def add(self, chunk: bytes) -> None:
        self.done += len(chunk)

    def line(self) -> tuple[float | None, str]:
        now = time.time()
        rate = self._rate.sample(now, self.done)
        fraction = self.done / self.total if self.total > 0 else None
        return fraction, describe_read(self.done, self.total, rate, now - self.started, self.finished)
