"""A daemon without Kubernetes sources never loads the Kubernetes client: its ~860 generated
modules cost about 40 MB of memory and a second of start-up in every pod that does not use it."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
import meshprobe.cli.main, meshprobe.daemon.lifecycle, meshprobe.demo.run
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes_asyncio")
print(len(loaded))
"""


def test_the_daemon_and_cli_do_not_import_the_kubernetes_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "0", out.stdout + out.stderr


def test_the_discovery_manager_does() -> None:
    """The check above can fail: importing discovery's runner loads the client."""
    program = PROGRAM.replace("meshprobe.demo.run", "meshprobe.discovery.manager")
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert int(out.stdout.strip()) > 100
