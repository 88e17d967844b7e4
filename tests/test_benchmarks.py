"""The device check script runs end to end in its tiny CPU setting (the GPU run uses the same code)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_step_in_its_tiny_setting():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "sclib img/s" in text and "mnist (28 px, small)" in text
    assert "epoch time:" in text and "pre-training: 1 epochs" in text
    assert "self-classifier head   NMI" in text and "k-means on pixels" in text
