"""`benchmarks/bench_serve.py` runs end to end on a tiny model and traces every answer (no speed checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serve.py"


@pytest.mark.slow
def test_the_load_test_runs_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    args = ["--tiny", "--requests", "6", "--new-tokens", "4", "--concurrency", "3", "--json", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [p["concurrency"] for p in report["phases"]] == [1, 3]
    for phase in report["phases"]:
        assert (phase["ok"], phase["lost"], phase["differ_from_sequential"], phase["duplicate_ids"]) == (
            6,
            0,
            0,
            0,
        )
        assert phase["tokens_per_s"] > 0
        assert phase["p99_latency_s"] >= phase["p50_latency_s"] > 0
    assert report["phases"][1]["speedup_vs_sequential"] > 0
