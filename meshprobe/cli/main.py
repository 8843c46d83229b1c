"""Command line: run, check, probe, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshprobe import __version__

if TYPE_CHECKING:
    from meshprobe.config.settings import ConfigError, Settings

EXIT_INVALID_CONFIG = 2  # the config, or a file it names: `check` says the same
EXIT_CANNOT_START = 1  # a valid config this host refused (the listen address is taken, ...)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (the `fast` extra), else the stdlib loop."""
    if os.environ.get("MESHPROBE_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(main: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _config_path(args: argparse.Namespace) -> Path | None:
    value = args.config or os.environ.get("MESHPROBE_CONFIG")
    return Path(value) if value else None


def _load(path: Path | None, heading: str) -> Settings | None:
    """The one place `check` and `run` load a config: same messages, same exit code."""
    from meshprobe.config.settings import ConfigError, load_settings  # noqa: PLC0415

    try:
        return load_settings(path)
    except ConfigError as exc:
        _print_invalid(exc, heading, path)
        return None


def _web_config_path(args: argparse.Namespace) -> Path | None:
    return Path(args.web_config_file) if args.web_config_file else None


def _check_web(
    settings: Settings, config_path: Path | None, web_path: Path | None, heading: str
) -> str | None:
    """The effective web config, its TLS files loaded once: a summary line, or None after
    printing every problem (the same way as the main config's)."""
    from meshprobe.config.settings import ConfigError  # noqa: PLC0415
    from meshprobe.config.web import describe_web, effective_web_config  # noqa: PLC0415
    from meshprobe.web.listener import ListenerSecurity  # noqa: PLC0415

    try:
        web = effective_web_config(settings.web, web_path)
        ListenerSecurity(web, where="" if web_path else "web").close()
    except ConfigError as exc:
        _print_invalid(exc, heading, web_path or config_path)
        return None
    return describe_web(web)


def _print_invalid(exc: ConfigError, heading: str, path: Path | None) -> None:
    from meshprobe.config.settings import format_issues  # noqa: PLC0415

    print(f"{heading}: {path if path is not None else '<env>'}", file=sys.stderr)
    print(format_issues(exc.errors), file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config and load every file `run` loads at start (the trust bundle, the
    listener's certificate), so a config that passes here does not crash-loop a pod; files read
    only later are warnings."""
    from meshprobe.config.settings import (  # noqa: PLC0415
        ConfigError,
        budget_warnings,
        summarize,
    )
    from meshprobe.daemon.logsetup import configure_logging  # noqa: PLC0415
    from meshprobe.trust.configfiles import (  # noqa: PLC0415
        file_warnings,
        load_trust_bundle,
        skipped_roots,
    )

    path = _config_path(args)
    settings = _load(path, "config invalid")
    if settings is None:
        return EXIT_INVALID_CONFIG
    web = _check_web(settings, path, _web_config_path(args), "config invalid")
    if web is None:
        return EXIT_INVALID_CONFIG
    configure_logging("error", "console")  # skipped roots are reported below, not logged
    try:
        anchors = load_trust_bundle(settings)
    except ConfigError as exc:
        _print_invalid(exc, "config invalid", path)
        return EXIT_INVALID_CONFIG
    for issue in skipped_roots(anchors) + file_warnings(settings) + budget_warnings(settings):
        print(f"warning: {issue}", file=sys.stderr)
    print(summarize(settings))
    print(web)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from meshprobe.daemon.logsetup import configure_logging  # noqa: PLC0415

    path = _config_path(args)
    settings = _load(path, "config invalid, not starting")
    if settings is None:
        return EXIT_INVALID_CONFIG
    web_path = _web_config_path(args)
    if _check_web(settings, path, web_path, "config invalid, not starting") is None:
        return EXIT_INVALID_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    settings = _with_kube_flags(settings, args.kubeconfig, args.context)
    return run_async(_run_daemon(settings, path, web_path, "config invalid, not starting"))


def _with_kube_flags(settings: Settings, kubeconfig: str | None, context: str | None) -> Settings:
    """`--kubeconfig`/`--context` win over the file, like kubectl's flags over $KUBECONFIG."""
    update = {k: v for k, v in (("kubeconfig", kubeconfig), ("context", context)) if v}
    if not update:
        return settings
    kube = settings.discovery.kubernetes.model_copy(update=update)
    discovery = settings.discovery.model_copy(update={"kubernetes": kube})
    return settings.model_copy(update={"discovery": discovery})


async def _run_daemon(
    settings: Settings, path: Path | None, web_path: Path | None, heading: str
) -> int:
    """Run until SIGTERM/SIGINT. Start-up failures caused by input end with a message and an
    exit code, never a traceback: a bad trust bundle or listener certificate (loaded first
    thing at start, with the same checks and words as `check`) exits 2; a listen address this
    host refuses exits 1."""
    from meshprobe.config.settings import ConfigError  # noqa: PLC0415
    from meshprobe.daemon.lifecycle import Daemon  # noqa: PLC0415
    from meshprobe.web.grpchealth import ListenFailed  # noqa: PLC0415

    daemon = Daemon(settings, config_path=path, web_config_path=web_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    try:
        await daemon.run(stop)
    except ConfigError as exc:  # the bundle or a listener certificate, before anything started
        _print_invalid(exc, heading, path)
        return EXIT_INVALID_CONFIG
    except ListenFailed as exc:
        await daemon.stop()
        print(f"meshprobe: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except OSError as exc:
        listening = daemon.port is not None
        await daemon.stop()  # the probe environment start() had made before the listener
        if listening:
            print(f"meshprobe: cannot start: {_os_reason(exc)}", file=sys.stderr)
        else:
            print(
                f"meshprobe: cannot start: listen: cannot listen on {settings.listen}: "
                f"{_os_reason(exc)}",
                file=sys.stderr,
            )
        return EXIT_CANNOT_START
    return 0


def _os_reason(exc: OSError) -> str:
    """`Address already in use`, not asyncio's `[Errno 98] error while attempting to bind on
    address ('0.0.0.0', 9942): address already in use`; resolver errors keep their own words."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc.strerror or exc)


def cmd_probe(args: argparse.Namespace) -> int:
    from meshprobe.cli.probe import probe_once  # noqa: PLC0415

    return run_async(
        probe_once(
            args.url,
            kind=args.kind,
            ca_file=args.ca_file,
            identity=args.identity,
            timeout=args.timeout,
            insecure=args.insecure,
            cert_file=args.cert_file,
            key_file=args.key_file,
        )
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from meshprobe.config.durations import parse_duration  # noqa: PLC0415
    from meshprobe.demo.run import run_demo  # noqa: PLC0415

    return run_async(
        run_demo(
            ca_mismatch=args.ca_mismatch,
            listen=args.listen,
            duration=args.duration,
            interval=args.interval,
            remote_latency=parse_duration(args.remote_latency),
            with_prometheus=args.with_prometheus,
            rules=Path(args.rules) if args.rules else None,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshprobe",
        description="Latency, failover and TLS-trust prober for multi-cluster service meshes.",
    )
    parser.add_argument("--version", action="version", version=f"meshprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", help="config file (default: $MESHPROBE_CONFIG)")
    run.add_argument(
        "--kubeconfig",
        help="kubeconfig for discovery (default: in-cluster account, else $KUBECONFIG)",
    )
    run.add_argument("--context", help="kubeconfig context for discovery (default: current)")
    _add_web_flag(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config file; exit 2 when invalid")
    check.add_argument("--config", help="config file (default: $MESHPROBE_CONFIG)")
    _add_web_flag(check)
    check.set_defaults(func=cmd_check)

    probe = sub.add_parser("probe", help="probe one URL once and explain the result")
    probe.add_argument(
        "url", help="http://, https://, tcp://host:port, tls://host:port, grpc(s)://host:port"
    )
    probe.add_argument(
        "--kind",
        choices=["http", "https", "tcp", "tls", "grpc", "grpcs"],
        help="override the URL's scheme",
    )
    probe.add_argument("--ca-file", help="PEM bundle to verify against (default: system roots)")
    probe.add_argument("--identity", help="expected SPIFFE ID or DNS name of the server")
    probe.add_argument("--timeout", default="5s", help="e.g. 2s, 500ms (default 5s)")
    probe.add_argument(
        "--insecure", action="store_true", help="report the chain and verdict but do not fail on it"
    )
    probe.add_argument(
        "--cert-file", help="client certificate (PEM chain, leaf first) for mTLS servers"
    )
    probe.add_argument("--key-file", help="the client certificate's unencrypted PEM key")
    probe.set_defaults(func=cmd_probe)

    demo = sub.add_parser("demo", help="two simulated clusters on loopback, live table")
    demo.add_argument(
        "--ca-mismatch", action="store_true", help="issue cluster2 from a different root CA"
    )
    demo.add_argument(
        "--listen", default="127.0.1.1:9942", help="where the cluster1 meshprobe serves /metrics"
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    demo.add_argument("--interval", default="1s", help="probe interval (default 1s)")
    demo.add_argument(
        "--remote-latency",
        default="40ms",
        help="latency cluster2 adds (default 40ms; 300ms breaks the budget)",
    )
    demo.add_argument(
        "--with-prometheus",
        action="store_true",
        help="also start Prometheus + Alertmanager with the shipped rules",
    )
    demo.add_argument("--rules", help="rules file for --with-prometheus (default: the checkout's)")
    demo.set_defaults(func=cmd_demo)
    return parser


def _add_web_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="listener TLS and basic auth in exporter-toolkit's format (instead of the config's "
        "web section)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
