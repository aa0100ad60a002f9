"""benchmarks/gpu_smoke.py with --tiny --device cpu: the GPU smoke logic, run on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_smoke_tiny_on_cpu():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_smoke.py"), "--tiny", "--device", "cpu",
         "--families", "tiny-sd2,tiny-flux.1-dev", "--steps", "2", "--repeats", "1", "--warmup", "0",
         "--resolution", "32"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["family", "px", "build"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(rows) == {"tiny-sd2", "tiny-flux.1-dev"}
    for cols in rows.values():
        assert cols[1] == "32"
        assert all(float(v) > 0 for v in cols[2:8])  # build seconds; per-phase, sum and whole joules
        assert cols[8].endswith("%")
        assert cols[-1].startswith(("estimate:", "zeus:"))
    assert "2 families on" in lines[-1]


def test_gpu_smoke_rejects_unknown_family():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_smoke.py"), "--tiny", "--device", "cpu",
         "--families", "tiny-nope"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode != 0
    assert "families='tiny-nope' is not allowed" in out.stderr
