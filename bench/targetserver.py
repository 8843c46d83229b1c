"""A fast loopback HTTP/1.1 target with a precise injected delay, for the benchmarks.

Raw asyncio protocol (uvloop when installed): no framework between the socket and the timer, so
the server adds microseconds, not milliseconds. The delay is a `call_later` from the moment the
request head is complete. It prints its ports on one line, then serves until SIGTERM; its own CPU
time is in /proc for the benchmark to check it is not the bottleneck.

    python bench/targetserver.py --host 127.0.3.1 --delay 0.005 --cert cert.pem --key key.pem
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import signal
import ssl
import threading
import time
from collections.abc import Callable

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n"
    b"X-Meshprobe-Cluster: bench\r\n\r\nok\n"
)


class PreciseTimer:
    """Event-loop timers fire up to a millisecond late (epoll and libuv count milliseconds), which
    would bury a sub-millisecond timing error. A thread sleeps to just before each deadline, spins
    the rest, and hands the callback to the loop (a self-pipe wake-up, tens of microseconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self.lateness: list[float] = []  # when the callback ran minus the deadline, seconds
        threading.Thread(target=self._run, daemon=True).start()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, callback))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, callback = self._heap[0]
                remaining = deadline - time.perf_counter()
                if remaining > 0.0002:
                    self._cond.wait(remaining - 0.0002)
                    continue
                heapq.heappop(self._heap)
            while time.perf_counter() < deadline:
                pass
            self._loop.call_soon_threadsafe(self._fire, deadline, callback)

    def _fire(self, deadline: float, callback: Callable[[], None]) -> None:
        self.lateness.append(time.perf_counter() - deadline)
        callback()


class Target(asyncio.Protocol):
    def __init__(self, delay: float, timer: PreciseTimer) -> None:
        self._delay = delay
        self._timer = timer
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            _, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            self._timer.call_at(time.perf_counter() + self._delay, self._answer)

    def _answer(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(RESPONSE)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.3.1")
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    timer = PreciseTimer(loop)
    http = await loop.create_server(lambda: Target(args.delay, timer), args.host, 0, backlog=4096)
    ports = {"http": http.sockets[0].getsockname()[1]}
    servers = [http]
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        https = await loop.create_server(
            lambda: Target(args.delay, timer), args.host, 0, ssl=ctx, backlog=4096
        )
        ports["https"] = https.sockets[0].getsockname()[1]
        servers.append(https)
    print(json.dumps(ports), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    late = sorted(timer.lateness) or [0.0]
    print(
        json.dumps(
            {
                "answers": len(timer.lateness),
                "lateness_median_ms": 1000 * late[len(late) // 2],
                "lateness_p99_ms": 1000 * late[min(len(late) - 1, int(0.99 * len(late)))],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
