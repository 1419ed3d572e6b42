"""The live progress lines of `run-now`, `verify` and `restore` on a terminal (stderr), drawn with rich.

Before the dump the work is estimated from the server's stats (operations/estimating.py, in a thread, so a
slow or unreachable server never delays the run); the line then shows the percentage of source bytes read,
the documents and source bytes done of the estimate, the source throughput and an ETA, and below it a line
per collection being dumped against that collection's estimate. Without an estimate it says "estimate
unavailable", and past it "beyond estimate", rather than a wrong percentage. Log lines are printed above
the line (rich clears it, prints the line, draws it again), and it is cleared when the run ends. `verify`
and `restore` show the bytes read of the blob's recorded size the same way. Nothing here runs when stderr
is not a terminal.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Self

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from backup_exporter.archive.counting import NamespaceCount
from backup_exporter.cli.format import human_age, human_bytes
from backup_exporter.mongo.estimate import WorkEstimate
from backup_exporter.operations.estimating import EstimateState, EstimateTask
from backup_exporter.operations.run import Progress

_RATE_WINDOW_SECONDS = 5.0
_BAR_WIDTH = 20
MAX_COLLECTION_LINES = 4  # collections dumped at once shown below the total; the rest as "and N more"


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


def describe_collections(active: list[NamespaceCount], estimate: WorkEstimate | None,
                         limit: int = MAX_COLLECTION_LINES) -> list[tuple[float | None, str]]:
    """Return (part done or None, text) for each collection under way, at most `limit` of them and then
    one "and N more" line: its documents and bytes against its own estimate, when there is one."""
    expected = {ns.namespace: ns for ns in estimate.namespaces} if estimate is not None else {}
    lines: list[tuple[float | None, str]] = []
    for count in active[:limit]:
        done = f"{count.documents:,} docs  {human_bytes(count.data_bytes)}"
        ns = expected.get(count.namespace)
        fraction: float | None = None
        if ns is not None and ns.size_bytes:
            fraction = count.data_bytes / ns.size_bytes
        elif ns is not None and ns.documents:
            fraction = count.documents / ns.documents
        if ns is None or fraction is None:
            text = f"{done}  (no estimate)" if estimate is not None else done
        elif fraction > 1:
            text = f"beyond estimate  {done}"
        else:
            size = f"/{human_bytes(ns.size_bytes)}" if ns.size_bytes else ""
            text = (f"{math.floor(fraction * 100):3d}%  {count.documents:,}/{ns.documents:,} docs  "
                    f"{human_bytes(count.data_bytes)}{size}")
            lines.append((fraction, f"{count.namespace}  {text}"))
            continue
        lines.append((None, f"{count.namespace}  {text}"))
    if len(active) > limit:
        lines.append((None, f"and {len(active) - limit} more collection(s) under way"))
    return lines


class _AboveTheLine(io.TextIOBase):
    """A text stream for log handlers: each complete line is printed above the live line, unchanged; once
    `close_line()` ran, straight to `fallback` (a line logged by another thread while the live line stops
    must neither be lost nor glued to it)."""

    def __init__(self, console: Console, fallback: Any) -> None:
        self._console = console
        self._fallback = fallback
        self._buffer = ""
        self._lock = threading.Lock()
        self._live = True

    def write(self, text: str) -> int:
        with self._lock:
            if not self._live:
                self._fallback.write(text)
                return len(text)
            *lines, self._buffer = (self._buffer + text).split("\n")
            for line in lines:
                self._console.out(line, highlight=False)
        return len(text)

    def close_line(self, stop: Any) -> None:
        """Call `stop` (which clears the live line) with no log line in between; write on directly after."""
        with self._lock:
            stop()
            self._live = False
            if self._buffer:
                self._fallback.write(self._buffer)
                self._buffer = ""

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
        self._rebound: list[tuple[logging.StreamHandler[Any], _AboveTheLine, Any]] = []

    def line(self) -> tuple[float | None, str]:
        """Return (part done, for the bar, or None when unknown; the text beside the bar)."""
        raise NotImplementedError

    def details(self) -> list[tuple[float | None, str]]:
        """Return the lines drawn below the main one, like `line()` (none unless a subclass has some)."""
        return []

    def __enter__(self) -> Self:
        self._live = Live(console=self.console, get_renderable=self._render,
                          refresh_per_second=self._refresh_per_second, transient=True, redirect_stdout=False,
                          redirect_stderr=True)
        self._live.start()
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and stream in (sys.__stderr__, self.console.file):
                writer = _AboveTheLine(self.console, stream)
                self._rebound.append((handler, writer, handler.setStream(writer)))
        return self

    def finish(self) -> None:
        self.finished = True
        if self._live is not None:
            self._live.refresh()

    def __exit__(self, *_: object) -> None:
        live = self._live
        if live is not None:
            # Stopped while every writer holds its lock: a log line from another thread (a child's stderr
            # reader) lands either above the line or after it is cleared, never glued to it.
            stop = live.stop
            for _handler, writer, _stream in self._rebound:
                stop = functools.partial(writer.close_line, stop)
            stop()
        for handler, _writer, stream in self._rebound:
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
        if not self.finished:
            for part, detail in self.details():
                small = (ProgressBar(total=1, completed=min(1.0, part), width=_BAR_WIDTH) if part is not None
                         else Text(""))
                grid.add_row(small, Text(f"  {detail}", no_wrap=True, overflow="ellipsis"))
        return grid


class RunProgressLine(LiveLine):
    """The line of a backup run: `progress` against the estimate of `estimate`."""

    def __init__(self, progress: Progress, estimate: EstimateTask, console: Console | None = None,
                 refresh_per_second: float = 4) -> None:
        super().__init__(console, refresh_per_second)
        self.progress = progress
        self.estimate = estimate
        self._rate = _Rate()
        # Rates, ETA and elapsed time by the monotonic clock, from when the line is made (as the run starts):
        # a wall-clock step must not bend them.
        self._began = time.monotonic()

    def snapshot(self) -> Snapshot:
        p = self.progress
        now = time.monotonic()
        counted = p.archive
        rate = self._rate.sample(now, counted.data_bytes)
        return Snapshot(elapsed=now - self._began, documents=counted.documents, source_bytes=counted.data_bytes,
                        uploaded=p.uploaded, rate=rate, collections_done=counted.namespaces_done,
                        estimate_state=self.estimate.state, estimate=p.estimate, finished=self.finished)

    def line(self) -> tuple[float | None, str]:
        s = self.snapshot()
        return fraction_done(s), describe(s)

    def details(self) -> list[tuple[float | None, str]]:
        """One line per collection being dumped (several at once: the dump is multiplexed)."""
        estimate = self.progress.estimate if self.estimate.state == "ready" else None
        return describe_collections(self.progress.archive.active(), estimate)


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
    """The line of reading a stored backup of `total` bytes (verify, restore): feed each chunk read to `add`."""

    def __init__(self, total: int, console: Console | None = None, refresh_per_second: float = 4) -> None:
        super().__init__(console, refresh_per_second)
        self.total = total
        self.done = 0
        self.started = time.monotonic()  # rates and ETA by the monotonic clock: a wall-clock step bends none
        self._rate = _Rate()

    def add(self, chunk: bytes) -> None:
        self.done += len(chunk)

    def line(self) -> tuple[float | None, str]:
        now = time.monotonic()
        rate = self._rate.sample(now, self.done)
        fraction = self.done / self.total if self.total > 0 else None
        return fraction, describe_read(self.done, self.total, rate, now - self.started, self.finished)
