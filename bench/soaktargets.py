"""Loopback targets for the soak benchmark: one port per slot, a share of them failing, and which
ones fail (and how) rotating over time.

Every `--rotate-every` seconds each slot draws its state for the new epoch from a hash of (seed,
slot, epoch): healthy, or one failure mode. The modes are what a mesh sees go wrong:
- `refused`: the slot's listener is closed, so connecting gets RST (`connect_refused`);
- `hang`: the connection is accepted and never answered (`timeout`);
- `http500`: an HTTP 500 answer (`http_status`);
- `reset`: the request is read, then the connection is reset (SO_LINGER 0) (`reset`);
- `untrusted`: TLS slots only, a chain from a root the prober does not trust (`tls_untrusted`).
TLS slots pick their certificate per handshake (from the SNI callback), so a slot turns untrusted
and back without a restart.

It prints `{"ports": [...], "tls": [slot, ...]}` on one line, then serves until SIGTERM/SIGINT and
prints how many connections each mode answered.

    python bench/soaktargets.py --slots 500 --fail-share 0.2 --cert c.pem --key k.pem \
        --bad-cert b.pem --bad-key bk.pem
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import ssl
import struct
import sys
import time
import zlib
from collections import Counter

HTTP_MODES = ("refused", "hang", "http500", "reset")
TLS_MODES = (*HTTP_MODES, "untrusted")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Meshprobe-Cluster: soak\r\n\r\nok\n"
FAIL = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nfail\n"


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


class Slots:
    """The listeners and the current state of every slot."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bad = server_context(args.bad_cert, args.bad_key) if args.bad_cert else None
        tls_every = args.tls_every if args.cert and self.bad is not None else 0
        self.tls = {i for i in range(args.slots) if tls_every and i % tls_every == 0}
        self.ports: list[int] = []
        self.servers: dict[int, asyncio.Server] = {}
        self.modes: dict[int, str] = {}
        self.answered: Counter[str] = Counter()
        self.started = time.monotonic()

    def mode(self, slot: int, epoch: int) -> str:
        draw = zlib.crc32(f"{self.args.seed}:{slot}:{epoch}".encode())
        if draw % 10_000 >= self.args.fail_share * 10_000:
            return "ok"
        modes = TLS_MODES if slot in self.tls else HTTP_MODES
        return modes[(draw // 10_000) % len(modes)]

    def tls_context(self, slot: int) -> ssl.SSLContext | None:
        """The slot's listening context: it presents the trusted chain, and switches to the
        untrusted one from the SNI callback (called with or without SNI) while the slot is
        `untrusted`, so the choice is made per handshake."""
        if slot not in self.tls:
            return None
        ctx = server_context(self.args.cert, self.args.key)
        bad = self.bad

        def choose(conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _c: object) -> None:
            if self.modes.get(slot) == "untrusted" and bad is not None:
                conn.context = bad

        ctx.sni_callback = choose
        return ctx

    async def listen(self, slot: int, port: int = 0) -> int:
        server = await asyncio.start_server(
            lambda r, w: self.serve(slot, r, w),
            self.args.host,
            port,
            ssl=self.tls_context(slot),
            reuse_address=True,
            backlog=1024,
        )
        self.servers[slot] = server
        return int(server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        for slot in range(self.args.slots):
            self.ports.append(await self.listen(slot))
        await self.rotate(0)

    async def rotate(self, epoch: int) -> None:
        for slot in range(self.args.slots):
            mode = self.mode(slot, epoch)
            was = self.modes.get(slot)
            self.modes[slot] = mode
            if mode == "refused" and was != "refused":
                self.servers.pop(slot).close()
            elif was == "refused" and mode != "refused":
                try:
                    await self.listen(slot, self.ports[slot])
                except OSError as exc:  # someone took the port meanwhile: it stays refused
                    print(f"slot {slot}: cannot listen again: {exc}", file=sys.stderr)
                    self.modes[slot] = "refused"

    async def rotating(self) -> None:
        epoch = 0
        while True:
            epoch += 1
            wake = self.started + epoch * self.args.rotate_every
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            await self.rotate(epoch)

    async def serve(
        self, slot: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        mode = self.modes.get(slot, "ok")
        self.answered[mode] += 1
        try:
            if mode == "hang":
                while await reader.read(65536):
                    pass
                return
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if mode == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(FAIL if mode == "http500" else OK)
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the prober hung up, or timed out on a hang: the expected ending
        except asyncio.CancelledError:
            # At shutdown. Swallowed: Python 3.11's start_server callback calls
            # task.exception() on a cancelled handler and prints a spurious traceback.
            pass
        finally:
            writer.transport.abort()

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.3.1")
    parser.add_argument("--slots", type=int, default=500)
    parser.add_argument("--fail-share", type=float, default=0.2)
    parser.add_argument("--rotate-every", type=float, default=20.0)
    parser.add_argument("--tls-every", type=int, default=5, help="every Nth slot speaks TLS")
    parser.add_argument("--seed", default="soak")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--bad-cert")
    parser.add_argument("--bad-key")
    args = parser.parse_args()
    slots = Slots(args)
    await slots.start()
    print(json.dumps({"ports": slots.ports, "tls": sorted(slots.tls)}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    rotation = asyncio.create_task(slots.rotating())
    await stop.wait()
    rotation.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await rotation
    slots.close()
    print(json.dumps({"answered": dict(slots.answered)}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
