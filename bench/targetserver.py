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
import json
import signal
import ssl

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n"
    b"X-Meshprobe-Cluster: bench\r\n\r\nok\n"
)


class Target(asyncio.Protocol):
    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            _, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            asyncio.get_running_loop().call_later(self._delay, self._answer)

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
    http = await loop.create_server(lambda: Target(args.delay), args.host, 0, backlog=4096)
    ports = {"http": http.sockets[0].getsockname()[1]}
    servers = [http]
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        https = await loop.create_server(
            lambda: Target(args.delay), args.host, 0, ssl=ctx, backlog=4096
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


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
