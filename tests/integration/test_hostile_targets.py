"""The daemon among hostile targets: every fault is a failed probe with its reason, and the
healthy target keeps being probed, successfully, throughout."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki
from tests.integration.daemonkit import Rounds, samples, scrape, write_config
from tests.integration.faults import (
    SPIFFE_ID,
    FaultServer,
    Reply,
    TestPki,
    big_body,
    echo,
    garbage,
    hang,
    http,
    refused_port,
    reset_mid_response,
)


async def test_faults_fail_with_their_reason_while_healthy_targets_keep_going(
    tmp_path: Path, test_pki: TestPki
) -> None:
    bundle = tmp_path / "bundle.pem"
    pki.write_bundle(bundle, [test_pki.root])
    servers = {
        "ok/echo": (FaultServer(echo("cluster1")), "http", {}, None),
        "bad/hang": (FaultServer(hang), "http", {}, "timeout"),
        "bad/garbage": (FaultServer(garbage), "http", {}, "protocol"),
        "bad/reset": (FaultServer(reset_mid_response), "http", {}, "reset"),
        "bad/huge": (FaultServer(big_body(50 * 1024 * 1024)), "http", {}, "body_too_large"),
        "bad/status": (FaultServer(http(Reply(status=503))), "http", {}, "http_status"),
        "bad/body": (
            FaultServer(http(Reply(body=b"degraded"))),
            "http",
            {"body_regex": "^ok"},
            "body_mismatch",
        ),
        "ok/https": (FaultServer(echo("c1"), tls=test_pki.good()), "https", {}, None),
        "bad/self-signed": (
            FaultServer(echo("c1"), tls=test_pki.self_signed_ctx()),
            "https",
            {},
            "tls_untrusted",
        ),
        "bad/other-ca": (
            FaultServer(echo("c1"), tls=test_pki.from_other_ca()),
            "https",
            {},
            "tls_untrusted",
        ),
        "bad/expired-leaf": (
            FaultServer(echo("c1"), tls=test_pki.expired_leaf_ctx()),
            "https",
            {},
            "tls_expired",
        ),
        "bad/expired-intermediate": (
            FaultServer(echo("c1"), tls=test_pki.expired_intermediate_ctx()),
            "https",
            {},
            "tls_expired",
        ),
        "bad/identity": (
            FaultServer(echo("c1"), tls=test_pki.wrong_identity_ctx()),
            "https",
            {},
            "tls_identity",
        ),
    }
    async with contextlib.AsyncExitStack() as stack:
        targets: list[dict[str, Any]] = []
        for name, (server, scheme, extra, _) in servers.items():
            await stack.enter_async_context(server)
            spec: dict[str, Any] = {"name": name, "url": server.url(scheme), **extra}
            if scheme == "https":
                spec["tls"] = {"identity": SPIFFE_ID}
            targets.append(spec)
        dead = stack.enter_context(refused_port())
        targets.append({"name": "bad/refused", "url": f"http://127.0.0.1:{dead}/"})
        expected = {name: reason for name, (_, _, _, reason) in servers.items()}
        expected["bad/refused"] = "connect_refused"

        path = write_config(
            tmp_path / "c.yaml",
            {
                "cluster": "cluster1",
                "listen": "127.0.0.1:0",
                "log_format": "json",
                "defaults": {"interval": "300ms", "timeout": "250ms"},
                "trust": {"bundle_file": str(bundle)},
                "targets": targets,
            },
        )
        daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={})
        rounds = Rounds(daemon)
        await daemon.start()
        try:
            await rounds.wait(list(expected), at_least=3)
            assert daemon.port is not None
            text = await scrape(daemon.port)
        finally:
            await daemon.stop()

    observed = {name: (r.reason.value if r.reason else None) for name, r in rounds.last.items()}
    assert observed == expected
    failures: dict[tuple[str, str], float] = {
        (lbl["target"], lbl["reason"]): v
        for lbl, v in samples(text, "meshprobe_probe_failures_total")
    }
    for name, reason in expected.items():
        if reason is not None:
            assert failures[(name, reason)] >= 3, (name, reason)
    success = {lbl["target"]: v for lbl, v in samples(text, "meshprobe_probe_success")}
    assert success["ok/echo"] == 1.0 and success["ok/https"] == 1.0
    healthy_failures = sum(v for (t, _), v in failures.items() if t.startswith("ok/"))
    assert healthy_failures == 0
    verified = {lbl["target"]: v for lbl, v in samples(text, "meshprobe_tls_verified")}
    assert verified["ok/https"] == 1.0 and verified["bad/other-ca"] == 0.0
