"""The benchmark runs end to end (briefly); its figures belong in bench/, not here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench" / "compare.py"


@pytest.mark.skipif(
    shutil.which("prometheus-blackbox-exporter") is None, reason="needs blackbox_exporter"
)
def test_compare_quick_run_produces_both_probers(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--skip", "scale", "churn", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    probers = {(c["prober"], c["proto"]) for c in results["cases"]}
    assert probers == {
        ("meshprobe", "http"),
        ("blackbox", "http"),
        ("meshprobe", "https"),
        ("blackbox", "https"),
    }
    assert all(c["probes"] > 0 and c["cpu_s_per_1000"] > 0 for c in results["cases"])
    assert "| http | 50 | meshprobe |" in proc.stdout
