"""The gRPC health target of the benchmark: grpcio's reference health service, answering
`grpc.health.v1.Health/Check` with SERVING after `--delay` seconds (the same injected delay as
bench/targetserver.py, so timing errors compare), in a thread pool wide enough for 1000/s.
Prints `{"grpc": PORT}` once listening; stops on SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class DelayedHealth(health.HealthServicer):  # type: ignore[misc]
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def Check(self, request: Any, context: Any) -> Any:  # gRPC's method name
        if self.delay:
            time.sleep(self.delay)
        return super().Check(request, context)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.3.1")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    servicer = DelayedHealth(args.delay)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{args.host}:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"grpc": port}), flush=True)
    stop.wait()
    server.stop(grace=1).wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
