"""Soak: does anything grow when meshprobe runs for an hour against a changing, partly broken mesh?

`meshprobe run` probes `--targets` loopback targets every second (bench/soaktargets.py, every
fifth one over TLS). A share of them (`--fail-share`) fails at any moment, in rotating ways:
refused, hanging (timeout), HTTP 500, reset, untrusted TLS; which targets fail, and how, changes
every `--rotate-every` seconds. Every `--churn-every` seconds 10 % of the targets are replaced
(new names on the same ports) by rewriting the config and sending SIGHUP.

Every `--interval` seconds it records, for the meshprobe process: RSS and open fds (/proc), the
number of series on /metrics, stale series (of removed targets, still exported) and missing
targets (configured, but without series), the /metrics response time and size, and the share of
targets whose last probe failed. An extra scrape follows each SIGHUP by `--settle` seconds. The
first scrape after a SIGHUP (that one, unless a periodic record comes sooner) is grace: recorded
and shown, but stale or missing series in it do not count; every later scrape counts.

At the end it prints a table and the growth between the first and the last minute (RSS, fds,
series), writes everything as JSON to `--out`, and exits 1 if stale or missing series were seen
outside grace or meshprobe died, 0 otherwise. Child processes die with it, however it ends.

    python bench/soak.py                                  # the one-hour soak, 500 targets
    python bench/soak.py --targets 20 --duration 15 --interval 5 --churn-every 5   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import yaml

from meshprobe.demo import pki

HOST = "127.0.3.1"
HERE = Path(__file__).parent
_TARGET = re.compile(r'target="((?:[^"\\]|\\.)*)"')
_REASON = re.compile(r'reason="([^"]*)"')
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in each child before exec: the kernel sends it SIGTERM when this script dies, even
    by SIGKILL, so no prober or target server outlives a soak."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _raise_exit(signum: int, _frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Record:
    t: float  # seconds since the start
    kind: str  # "periodic", or "after-hup" for the extra scrape `--settle` s after a SIGHUP
    grace: bool  # the first scrape after a SIGHUP: stale/missing do not count
    targets: int
    rss_mib: float
    fds: int
    series: int
    stale: int
    missing: int
    metrics_ms: float
    metrics_kib: float
    failing_share: float  # of the configured targets probed so far, those whose last probe failed
    failures_by_reason: dict[str, float] = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return not self.grace and (self.stale > 0 or self.missing > 0)


def analyse(text: str, wanted: set[str]) -> dict[str, Any]:
    """Series, stale and missing targets, failing share and failures by reason, from one
    exposition (a line scan: the parser costs seconds at this size, and only labels matter)."""
    series = 0
    exported: set[str] = set()
    probed: dict[str, float] = {}  # target -> probes so far
    down: set[str] = set()  # targets whose last probe failed (or that were never probed)
    reasons: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series += 1
        found = _TARGET.search(line)
        if found is None:
            continue
        name = found.group(1)
        exported.add(name)
        if line.startswith("meshprobe_probes_total{"):
            probed[name] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("meshprobe_probe_success{") and float(line.rsplit(" ", 1)[1]) == 0:
            down.add(name)
        elif line.startswith("meshprobe_probe_failures_total{"):
            reason = _REASON.search(line)
            if reason is not None:
                value = float(line.rsplit(" ", 1)[1])
                reasons[reason.group(1)] = reasons.get(reason.group(1), 0.0) + value
    return {
        "series": series,
        "stale": len(exported - wanted),
        "missing": len(wanted - set(probed)),
        # of the configured targets probed at least once, those whose last probe failed
        "failing_share": len({n for n in down & wanted if probed.get(n, 0) > 0})
        / max(sum(1 for n in wanted if probed.get(n, 0) > 0), 1),
        "failures_by_reason": reasons,
    }


class Children:
    """The target server and meshprobe; `close` ends both, whatever state they are in."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)  # noqa: PLW1509
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Soak:
    args: argparse.Namespace
    workdir: Path
    children: Children
    records: list[Record] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)  # target name -> target-server slot
    next_id: int = 0
    reloads: int = 0
    answered: dict[str, int] = field(default_factory=dict)  # the target server's own count
    # Set as the processes start:
    server: subprocess.Popen[str] = field(init=False)
    ports: list[int] = field(init=False)
    tls_slots: set[int] = field(init=False)
    meshprobe: subprocess.Popen[bytes] = field(init=False)
    port: int = field(init=False)
    log: BinaryIO = field(init=False)

    def start_targets(self) -> None:
        root, bad_root = pki.make_root("soak root"), pki.make_root("soak untrusted root")
        pki.write_bundle(self.workdir / "ca.pem", [root])
        for name, issuer in (("good", root), ("bad", bad_root)):
            leaf = pki.make_leaf(issuer, "soak", ip_addresses=[HOST])
            (self.workdir / f"{name}.pem").write_bytes(leaf.cert_pem())
            (self.workdir / f"{name}.key").touch(mode=0o600)
            (self.workdir / f"{name}.key").write_bytes(leaf.key_pem())
        argv = [sys.executable, str(HERE / "soaktargets.py"), "--host", HOST]
        argv += ["--slots", str(self.args.targets), "--fail-share", str(self.args.fail_share)]
        argv += ["--rotate-every", str(self.args.rotate_every)]
        argv += ["--cert", str(self.workdir / "good.pem"), "--key", str(self.workdir / "good.key")]
        argv += ["--bad-cert", str(self.workdir / "bad.pem")]
        argv += ["--bad-key", str(self.workdir / "bad.key")]
        self.server = self.children.start(argv, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError("the target server exited before listing its ports")
        listing = json.loads(line)
        self.ports = listing["ports"]
        self.tls_slots = set(listing["tls"])
        for slot in range(self.args.targets):
            self.slots[self.new_name()] = slot

    def new_name(self) -> str:
        self.next_id += 1
        return f"soak/t{self.next_id:06d}"

    def config(self) -> dict[str, Any]:
        def url(slot: int) -> str:
            return f"{'https' if slot in self.tls_slots else 'http'}://{HOST}:{self.ports[slot]}/"

        return {
            "cluster": "soak",
            "listen": f"127.0.0.1:{self.port}",
            "log_level": "error",
            "log_format": "json",
            "concurrency": 4096,
            "defaults": {"interval": self.args.probe_interval, "timeout": self.args.probe_timeout},
            "trust": {"bundle_file": str(self.workdir / "ca.pem")},
            "targets": [{"name": n, "url": url(s)} for n, s in self.slots.items()],
        }

    def write_config(self) -> None:
        tmp = self.workdir / "meshprobe.yaml.new"
        tmp.write_text(yaml.safe_dump(self.config()))
        tmp.replace(self.workdir / "meshprobe.yaml")  # never a half-written file on SIGHUP

    def start_meshprobe(self) -> None:
        self.port = free_port()
        self.write_config()
        self.log = (self.workdir / "meshprobe.log").open("wb")
        argv = [sys.executable, "-m", "meshprobe", "run"]
        argv += ["--config", str(self.workdir / "meshprobe.yaml")]
        self.meshprobe = self.children.start(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            self.check_alive()
            try:
                self.scrape()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def check_alive(self) -> None:
        if self.meshprobe.poll() is not None:
            raise RuntimeError(f"meshprobe exited with {self.meshprobe.returncode}")

    def scrape(self) -> tuple[str, float]:
        began = time.perf_counter()
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = resp.read().decode()
        return text, time.perf_counter() - began

    def churn(self) -> None:
        """Replace the oldest 10 % of targets with new names on the same slots, then SIGHUP."""
        count = max(1, math.ceil(len(self.slots) / 10))
        for name in list(self.slots)[:count]:
            slot = self.slots.pop(name)
            self.slots[self.new_name()] = slot
        self.write_config()
        self.meshprobe.send_signal(signal.SIGHUP)
        self.reloads += 1

    def record(self, t: float, kind: str, grace: bool) -> Record:
        self.check_alive()
        pid = self.meshprobe.pid
        text, took = self.scrape()
        found = analyse(text, set(self.slots))
        rec = Record(
            t=round(t, 1),
            kind=kind,
            grace=grace,
            targets=len(self.slots),
            rss_mib=round(rss_mib(pid), 1),
            fds=open_fds(pid),
            metrics_ms=round(1000 * took, 1),
            metrics_kib=round(len(text.encode()) / 1024, 1),
            **found,
        )
        self.records.append(rec)
        print(row(rec), file=sys.stderr, flush=True)
        return rec

    def run(self) -> None:
        args = self.args
        start = time.monotonic()
        next_record, next_churn = 0.0, args.churn_every
        check_at: float | None = None
        pending_grace = False
        while True:
            now = time.monotonic() - start
            due = min(
                x for x in (next_record, next_churn, check_at, args.duration) if x is not None
            )
            if due > now:
                time.sleep(due - now)
                continue
            if now >= args.duration:
                self.record(now, "periodic", pending_grace)
                return
            if next_record <= now:
                self.record(now, "periodic", pending_grace)
                pending_grace = False
                next_record += args.interval
            elif next_churn <= now:
                self.churn()
                pending_grace = True
                check_at = now + args.settle
                next_churn += args.churn_every
            elif check_at is not None and check_at <= now:
                self.record(now, "after-hup", pending_grace)
                pending_grace = False
                check_at = None

    def stop_targets(self) -> None:
        """SIGTERM the target server and keep its count of answers per mode."""
        if self.server.poll() is None:
            self.server.terminate()
        try:
            out, _ = self.server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            return
        for line in out.splitlines():
            if line.startswith('{"answered"'):
                self.answered = json.loads(line)["answered"]


def row(rec: Record) -> str:
    note = "grace" if rec.grace else ("STALE/MISSING" if rec.bad else "")
    if rec.kind != "periodic":
        note = f"{rec.kind} {note}".strip()
    return (
        f"| {rec.t:7.1f} | {rec.targets} | {rec.rss_mib:7.1f} | {rec.fds} | {rec.series} | "
        f"{rec.stale} | {rec.missing} | {rec.metrics_ms:.1f} | {rec.metrics_kib:.0f} | "
        f"{100 * rec.failing_share:.0f} | {note} |"
    )


HEADER = (
    "| t s | targets | RSS MiB | fds | series | stale | missing | /metrics ms | /metrics KiB | "
    "failing % | note |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def growth(records: list[Record]) -> dict[str, Any]:
    """Mean of the first minute's periodic records against the last minute's."""
    periodic = [r for r in records if r.kind == "periodic"]
    if not periodic:
        return {}
    end = periodic[-1].t
    first = [r for r in periodic if r.t <= 60.0] or periodic[:1]
    last = [r for r in periodic if r.t >= end - 60.0] or periodic[-1:]
    out: dict[str, Any] = {
        "first_minute_records": len(first),
        "last_minute_records": len(last),
    }
    for key in ("rss_mib", "fds", "series", "metrics_ms"):
        a = statistics.fmean(getattr(r, key) for r in first)
        b = statistics.fmean(getattr(r, key) for r in last)
        out[key] = {
            "first": round(a, 1),
            "last": round(b, 1),
            "growth": round(b - a, 1),
            "growth_pct": round(100 * (b - a) / a, 1) if a else None,
        }
    return out


def report(soak: Soak, interrupted: bool) -> int:
    grown = growth(soak.records)
    bad = [r for r in soak.records if r.bad]
    print("\n" + HEADER)
    for rec in soak.records:
        print(row(rec))
    print("\ngrowth, first minute -> last minute:")
    for key in ("rss_mib", "fds", "series", "metrics_ms"):
        if key in grown:
            g = grown[key]
            pct = "" if g["growth_pct"] is None else f" ({g['growth_pct']:+.1f} %)"
            print(f"  {key:10} {g['first']:>9} -> {g['last']:>9}  {g['growth']:+.1f}{pct}")
    print(f"reloads: {soak.reloads}; target server answers by mode: {soak.answered}")
    if bad:
        print(f"FAIL: stale or missing series outside grace in {len(bad)} scrapes")
    results = {
        "args": vars(soak.args),
        "interrupted": interrupted,
        "reloads": soak.reloads,
        "answered_by_mode": soak.answered,
        "growth": grown,
        "bad_scrapes": len(bad),
        "records": [asdict(r) for r in soak.records],
    }
    out = Path(soak.args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return 1 if bad else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between records")
    parser.add_argument("--churn-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--fail-share", type=float, default=0.2)
    parser.add_argument("--rotate-every", type=float, default=20.0, help="seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="extra scrape after SIGHUP, s")
    parser.add_argument("--probe-interval", default="1s")
    parser.add_argument("--probe-timeout", default="800ms")
    parser.add_argument("--out", default="bench/soak-results.json")
    args = parser.parse_args(argv)
    if args.targets < 1:
        parser.error("--targets must be at least 1")
    if not 0.0 <= args.fail_share <= 1.0:
        parser.error("--fail-share must be between 0 and 1")
    for name in ("duration", "interval", "churn_every", "rotate_every", "settle"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


_STOPPING = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@contextlib.contextmanager
def signals_end_the_run() -> Iterator[None]:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so the `finally` that ends the children runs."""
    previous = {s: signal.getsignal(s) for s in _STOPPING}
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ignore_stop_signals() -> None:
    """While the children are being ended: a second Ctrl-C must not cut that short (SIGKILL
    still works, and then the children get their parent-death signal)."""
    for s in _STOPPING:
        signal.signal(s, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = Children()
    interrupted = False
    failed: str | None = None
    with signals_end_the_run(), tempfile.TemporaryDirectory(prefix="meshprobe-soak-") as tmp:
        soak = Soak(args, Path(tmp), children)
        try:
            soak.start_targets()
            soak.start_meshprobe()
            print(
                f"soak: meshprobe pid {soak.meshprobe.pid}, targets pid {soak.server.pid}, "
                f"{args.targets} targets for {args.duration:g} s",
                file=sys.stderr,
                flush=True,
            )
            print(HEADER, file=sys.stderr, flush=True)
            soak.run()
        except (KeyboardInterrupt, SystemExit):
            interrupted = True
        except (RuntimeError, OSError) as exc:
            failed = str(exc)
        finally:
            ignore_stop_signals()
            if hasattr(soak, "server"):
                soak.stop_targets()
            children.close()
            if hasattr(soak, "log"):
                soak.log.close()
            log = Path(tmp) / "meshprobe.log"
            if failed is not None and log.exists():
                sys.stderr.write(log.read_text(errors="replace")[-3000:])
    status = report(soak, interrupted) if soak.records else 1
    if failed is not None:
        print(f"soak failed: {failed}", file=sys.stderr)
        return 1
    return 130 if interrupted else status


if __name__ == "__main__":
    raise SystemExit(main())
