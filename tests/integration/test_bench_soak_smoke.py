"""The soak benchmark runs end to end (briefly), and never leaves a child process behind. The
hour-long run and its figures belong in bench/, not here."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).parents[2] / "bench" / "soak.py"
QUICK = ["--targets", "20", "--interval", "4", "--churn-every", "4", "--rotate-every", "3"]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_soak_quick_run_records_everything(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SOAK), *QUICK, "--duration", "14", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    records = results["records"]
    assert len([r for r in records if r["kind"] == "periodic"]) >= 4  # 0, 4, 8, 12 and the end
    assert results["reloads"] >= 2
    assert all(r["rss_mib"] > 10 and r["fds"] > 3 and r["series"] > 20 for r in records)
    assert all(r["targets"] == 20 for r in records)
    assert any(r["grace"] for r in records)  # the scrape right after a SIGHUP
    checked = [r for r in records if r["t"] > 4.0 and not r["grace"]]  # after the first reload
    assert checked and all(r["stale"] == 0 and r["missing"] == 0 for r in checked)
    assert results["bad_scrapes"] == 0
    # Failures happened, in more than one way, and healthy answers too.
    reasons = {k for k, v in records[-1]["failures_by_reason"].items() if v > 0}
    assert len(reasons) >= 2, records[-1]["failures_by_reason"]
    assert results["answered_by_mode"].get("ok", 0) > 0
    assert set(results["growth"]) >= {"rss_mib", "fds", "series", "metrics_ms"}
    assert "growth, first minute -> last minute:" in proc.stdout
    assert re.search(r"\| +0\.0 \| 20 \|", proc.stdout)


def test_sigterm_ends_the_soak_and_its_children(tmp_path: Path) -> None:
    argv = [sys.executable, str(SOAK), *QUICK, "--duration", "600", "--out", str(tmp_path / "o")]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            pids: list[int] = []
            for line in proc.stderr:  # blocks until the soak announces its children
                found = re.match(r"soak: meshprobe pid (\d+), targets pid (\d+)", line)
                if found:
                    pids = [int(found.group(1)), int(found.group(2))]
                    break
            assert pids, "the soak never announced its children"
            assert not any(gone(pid) for pid in pids)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
            assert proc.returncode == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert all(gone(pid) for pid in pids)
