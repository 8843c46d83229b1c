"""What `check` passes, `run` can start with: the bad trust bundle through check and run (real
files, real processes), a listen address this host refuses, and the files `check` only warns about.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from meshprobe.demo import pki
from tests import certkit
from tests.integration.daemonkit import write_config
from tests.integration.test_cli import run

MiB = 1024 * 1024


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "absent" / "ca.pem"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "trust"
    path.mkdir()
    return path


def _garbage_50mb(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pem"
    path.write_bytes(random.Random(12).randbytes(50 * MiB))
    return path


def _garbage_small(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pem"
    path.write_bytes(random.Random(12).randbytes(MiB))
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.pem"
    path.write_bytes(b"")
    return path


def _broken_pem(tmp_path: Path) -> Path:
    path = tmp_path / "broken.pem"
    path.write_bytes(
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    return path


def _no_usable_root(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.pem"
    pki.write_bundle(
        path, [certkit.ca(None, "hostile root", extensions=[certkit.bad_name_constraints()])]
    )
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "ca.fifo"
    os.mkfifo(path)  # nobody ever writes: reading it would hang `check` forever
    return path


BAD_BUNDLES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (_missing, "no such file"),
    "directory": (_directory, "is a directory"),
    "50MB garbage": (_garbage_50mb, "larger than 8 MiB"),
    "1MB garbage": (_garbage_small, "no '-----BEGIN CERTIFICATE-----' block found"),
    "empty": (_empty, "empty, expected one or more PEM certificates"),
    "broken PEM": (_broken_pem, "unparseable certificate"),
    "no usable root": (_no_usable_root, "no usable certificate (CN=hostile root: extensions"),
    "fifo": (_fifo, "not a regular file"),
}


def _config(tmp_path: Path, **extra: object) -> Path:
    return write_config(
        tmp_path / "meshprobe.yaml",
        {"cluster": "c1", "listen": "127.0.0.1:0", "log_format": "json", **extra},
    )


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_the_bad_bundle_through_check_and_run(tmp_path: Path, case: str) -> None:
    make, reason = BAD_BUNDLES[case]
    bundle = make(tmp_path)
    config = _config(tmp_path, trust={"bundle_file": str(bundle)})
    expected = f"trust.bundle_file: {bundle}: {reason}"

    checked = run("check", "--config", str(config), timeout=60)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "config OK" not in checked.stdout
    assert expected in checked.stderr, checked.stderr
    assert checked.stderr.startswith(f"config invalid: {config}\n")

    # A `run` that got past the bundle would serve until killed: the timeout fails the test.
    started = run("run", "--config", str(config), timeout=60)
    assert started.returncode == 2, started.stderr
    assert "Traceback" not in started.stderr
    assert expected in started.stderr
    assert f"config invalid, not starting: {config}\n" in started.stderr
    assert "meshprobe started" not in started.stderr


def test_a_good_bundle_passes_check_with_skipped_roots_as_warnings(tmp_path: Path) -> None:
    good = pki.make_root("mesh root")
    hostile = certkit.ca(None, "hostile root", extensions=[certkit.bad_name_constraints()])
    bundle = tmp_path / "ca.pem"
    pki.write_bundle(bundle, [hostile, good])
    out = run("check", "--config", str(_config(tmp_path, trust={"bundle_file": str(bundle)})))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("config OK") and f"trust bundle {bundle}" in out.stdout
    (warning,) = out.stderr.splitlines()
    assert warning.startswith("warning: trust.bundle_file: certificate skipped: CN=hostile root (")
    assert "extensions cannot be parsed" in warning


def test_check_warns_about_files_read_only_after_start(tmp_path: Path) -> None:
    """A target's unreadable ca_file fails that target's probes at run time and an absent
    kubeconfig leaves discovery retrying: warnings (exit 0) that say so, not errors."""
    garbage = _garbage_small(tmp_path)
    config = _config(
        tmp_path,
        targets=[
            {"name": "a/ok", "url": "https://127.0.0.1:1/"},
            {"name": "a/gone", "url": "tls://127.0.0.1:1", "tls": {"ca_file": "/absent/ca.pem"}},
            {"name": "a/junk", "url": "tls://127.0.0.1:2", "tls": {"ca_file": str(garbage)}},
        ],
        discovery={"kubernetes": {"enabled": True, "kubeconfig": str(tmp_path / "kubeconfig")}},
    )
    out = run("check", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "config OK" in out.stdout
    warnings = out.stderr.splitlines()
    assert warnings == [
        "warning: targets.1.tls.ca_file: /absent/ca.pem: no such file "
        "(this target's probes will fail with tls_untrusted)",
        f"warning: targets.2.tls.ca_file: {garbage}: no '-----BEGIN CERTIFICATE-----' block "
        "found (this target's probes will fail with tls_untrusted)",
        f"warning: discovery.kubernetes.kubeconfig: {tmp_path / 'kubeconfig'}: no such file "
        "(discovery will retry; the pod stays unready until it appears)",
    ]


def test_run_on_a_taken_listen_address_exits_1_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = _config(tmp_path, listen=f"127.0.0.1:{port}")
        assert run("check", "--config", str(config)).returncode == 0  # check cannot know
        out = run("run", "--config", str(config))
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert (
        f"meshprobe: cannot start: listen: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ) in out.stderr


def test_check_warns_about_a_client_certificate_it_cannot_use_yet(tmp_path: Path) -> None:
    """In a mesh the sidecar writes the pair after start: absent or mismatched files warn (probes
    go without a certificate meanwhile), they do not stop `run`."""
    root = pki.make_root("mesh root")
    one, other = pki.make_leaf(root, "one"), pki.make_leaf(root, "other")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(one.cert_pem())
    key.write_bytes(other.key_pem())
    config = _config(
        tmp_path,
        defaults={"tls": {"cert_file": "/etc/istio-output-certs/cert-chain.pem",
                          "key_file": "/etc/istio-output-certs/key.pem"}},
        targets=[
            {"name": "a/mtls", "url": "https://127.0.0.1:1/"},
            {"name": "a/own", "url": "tls://127.0.0.1:1",
             "tls": {"cert_file": str(cert), "key_file": str(key)}},
        ],
    )  # fmt: skip
    out = run("check", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        "warning: defaults.tls.cert_file: /etc/istio-output-certs/cert-chain.pem: no such file "
        "(probes go without a client certificate until the files hold a good pair; servers that "
        "require one refuse them)",
        f"warning: targets.1.tls.cert_file: {key} is not the key of the certificate in {cert} "
        "(one of them was replaced and the other not yet?) (probes go without a client "
        "certificate until the files hold a good pair; servers that require one refuse them)",
    ]
