"""A TCP fault proxy between the project and a real server (Azurite), for the failure tests.

No toxiproxy server is installable here, so this is a small asyncio proxy in the test support code. It
listens on 127.0.0.1 only, forwards to one upstream address on 127.0.0.1, and every loop in it is bounded
(a stall ends when cleared or after `max_stall` seconds; the proxy stops with the test).

It understands just enough HTTP/1.1 (request line, headers, Content-Length bodies: what the Azure SDK
sends) to answer requests itself with an error status, which is how throttling (503) and server errors
(500) are injected on connections the SDK keeps alive. The other faults act on bytes:

- ``reset_after(n)``: once n more request bytes have been forwarded, every open connection is reset
  (RST, not FIN), once; new connections then go through again (a transient network fault);
- ``stall()``: nothing is forwarded in either direction (connections stay open) until ``clear()``;
  ``stall_after(n)`` does the same once n more request bytes have gone through;
- ``latency(seconds)``: each forwarded chunk waits that long;
- ``bandwidth(bytes_per_second)``: request bytes are forwarded no faster than that, and so are responses;
- ``respond(status, count)``: the next `count` requests get `status` without reaching the upstream;
- ``refuse()``: new connections are closed at once, as a server that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.servers import free_port

_READ = 64 * 1024
_MAX_HEAD = 64 * 1024


@dataclass
class _Faults:
    reset_budget: int | None = None  # request bytes still allowed before the one reset
    resets: int = 0
    stall_budget: int | None = None  # request bytes still allowed before stalling
    stalled: bool = False
    latency: float = 0.0
    bytes_per_second: float | None = None
    respond_status: int = 0
    respond_left: int = 0
    refusing: bool = False
    requests: int = 0
    request_bytes: int = 0
    injected: list[int] = field(default_factory=list)  # statuses answered by the proxy


class FaultProxy:
    """The proxy, run on its own event-loop thread; the fault methods are safe to call from any thread."""

    def __init__(self, upstream_port: int, *, max_stall: float = 600.0, http: bool = True) -> None:
        self.upstream_port = upstream_port
        self.http = http  # False: a plain byte pipe (e.g. MongoDB's wire protocol); respond() is HTTP only
        self.port = free_port()
        self.max_stall = max_stall
        self._faults = _Faults()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    # -- faults ---------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forward everything again, at full speed."""
        with self._lock:
            old = self._faults
            self._faults = _Faults(requests=old.requests, request_bytes=old.request_bytes, resets=old.resets,
                                   injected=old.injected)

    def reset_after(self, request_bytes: int) -> None:
        with self._lock:
            self._faults.reset_budget = request_bytes

    def stall(self) -> None:
        with self._lock:
            self._faults.stalled = True

    def stall_after(self, request_bytes: int) -> None:
        with self._lock:
            self._faults.stall_budget = request_bytes

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._faults.latency = seconds

    def bandwidth(self, bytes_per_second: float) -> None:
        with self._lock:
            self._faults.bytes_per_second = bytes_per_second

    def respond(self, status: int, count: int) -> None:
        with self._lock:
            self._faults.respond_status, self._faults.respond_left = status, count

    def refuse(self) -> None:
        with self._lock:
            self._faults.refusing = True
        self._loop.call_soon_threadsafe(self._reset_all)

    @property
    def requests(self) -> int:
        """HTTP requests seen so far (forwarded or answered by the proxy)."""
        with self._lock:
            return self._faults.requests

    @property
    def resets(self) -> int:
        """Times the reset budget was spent and every connection reset."""
        with self._lock:
            return self._faults.resets

    @property
    def injected(self) -> list[int]:
        with self._lock:
            return list(self._faults.injected)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            self._reset_all()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- the proxy ------------------------------------------------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)

    async def _gate(self) -> None:
        """Wait while stalled (bounded), then apply latency."""
        deadline = time.monotonic() + self.max_stall
        while True:
            with self._lock:
                stalled, latency = self._faults.stalled, self._faults.latency
            if not stalled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if latency:
            await asyncio.sleep(latency)

    def _count(self, n: int) -> bool:
        """Account n request bytes; return True (once) when the reset budget is spent."""
        with self._lock:
            self._faults.request_bytes += n
            if self._faults.stall_budget is not None:
                self._faults.stall_budget -= n
                if self._faults.stall_budget <= 0:
                    self._faults.stall_budget, self._faults.stalled = None, True
            if self._faults.reset_budget is not None:
                self._faults.reset_budget -= n
                if self._faults.reset_budget <= 0:
                    self._faults.reset_budget = None
                    self._faults.resets += 1
                    return True
            return False

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            refusing = self._faults.refusing
        if refusing:
            _reset(client_w)
            return
        self._writers.add(client_w)
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _reset(client_w)
            self._writers.discard(client_w)
            return
        self._writers.add(upstream_w)
        back = asyncio.ensure_future(self._pipe_back(upstream_r, client_w))
        try:
            if self.http:
                await self._requests(client_r, client_w, upstream_w)
            else:
                while chunk := await client_r.read(_READ):
                    await self._forward(chunk, upstream_w)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            _reset(client_w)
            _reset(upstream_w)
        finally:
            back.cancel()
            for writer in (client_w, upstream_w):
                self._writers.discard(writer)
                with contextlib.suppress(Exception):
                    writer.close()

    async def _requests(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                        upstream_w: asyncio.StreamWriter) -> None:
        while True:
            head = await client_r.readuntil(b"\r\n\r\n") if not client_r.at_eof() else b""
            if not head:
                return
            if len(head) > _MAX_HEAD:
                raise ConnectionResetError("fault proxy: request head too large")
            length = _content_length(head)
            with self._lock:
                self._faults.requests += 1
                status = self._faults.respond_status if self._faults.respond_left > 0 else 0
                if status:
                    self._faults.respond_left -= 1
                    self._faults.injected.append(status)
            if status:
                await client_r.readexactly(length)
                client_w.write(_response(status))
                await client_w.drain()
                continue
            await self._forward(head, upstream_w)
            left = length
            while left > 0:
                chunk = await client_r.read(min(_READ, left))
                if not chunk:
                    raise ConnectionResetError("fault proxy: client closed mid-body")
                left -= len(chunk)
                await self._forward(chunk, upstream_w)

    async def _forward(self, data: bytes, writer: asyncio.StreamWriter) -> None:
        await self._gate()
        with self._lock:
            rate = self._faults.bytes_per_second
        if rate:
            await asyncio.sleep(len(data) / rate)
        writer.write(data)
        await writer.drain()
        if self._count(len(data)):
            self._reset_all()
            raise ConnectionResetError("fault proxy: reset after byte budget")

    async def _pipe_back(self, upstream_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await upstream_r.read(_READ)
                if not chunk:
                    break
                await self._gate()
                with self._lock:
                    rate = self._faults.bytes_per_second
                if rate:
                    await asyncio.sleep(len(chunk) / rate)
                client_w.write(chunk)
                await client_w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            _reset(client_w)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


def _response(status: int) -> bytes:
    reason = {500: "Internal Server Error", 503: "Server Busy"}.get(status, "Error")
    code = {500: "InternalError", 503: "ServerBusy"}.get(status, "InternalError")
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>injected by the fault proxy</Message></Error>").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nx-ms-error-code: {code}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to the client."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()


@contextlib.contextmanager
def fault_proxy(upstream_port: int, *, max_stall: float = 600.0, http: bool = True) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port, max_stall=max_stall, http=http)
    try:
        yield proxy
    finally:
        proxy.close()
