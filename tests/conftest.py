"""Fixtures shared by several test files; keep this small: only fixtures, no tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The smallest model the engine builds: a CPU pre-training epoch on digits takes about a second.
TINY_ARGS = ("--dataset", "digits", "--batch-size", "128", "--image-size", "8", "--mlp-hidden", "64",
             "--mlp-out", "16", "--heads", "10", "20", "--device", "cpu")


def write_image_folder(root: Path, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (28, 28),
                       mode: str = "L", test_per_class: int = 2) -> Path:
    """A tiny ImageFolder (train/<class>/*.png, test/<class>/*.png) of random images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
                Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
                    root / split / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def make_image_folder() -> Callable[..., Path]:
    """write_image_folder as a fixture: a test module cannot import it, since notebooks/ has a conftest too."""
    return write_image_folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A tiny grayscale 28 px ImageFolder of 3 classes."""
    return write_image_folder(tmp_path / "images")


@dataclass
class CliResult:
    code: int
    out: str
    err_lines: list[str]


@pytest.fixture(scope="session")
def tiny_args() -> tuple[str, ...]:
    """CLI flags of a tiny digits run; add --epochs and --out."""
    return TINY_ARGS


@pytest.fixture
def cli(capsys) -> Callable[..., CliResult]:
    """Run ``python -m sclib ARGS`` in-process (fast) and capture its exit code and output."""
    from sclib.cli import main

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
        captured = capsys.readouterr()
        return CliResult(code, captured.out, [line for line in captured.err.splitlines() if line.strip()])

    return run


@pytest.fixture(scope="session")
def sclib_env() -> dict[str, str]:
    """Environment for ``python -m sclib`` subprocesses: this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="session")
def sclib_command() -> Callable[..., list[str]]:
    """argv of ``python -m sclib ...`` with this interpreter."""
    return lambda *args: [sys.executable, "-m", "sclib", *map(str, args)]


@pytest.fixture(scope="session")
def run_sclib(sclib_env, sclib_command) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m sclib ARGS`` as a real subprocess (for kill -9 and exit-status checks)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(sclib_command(*args), env={**sclib_env, **(env or {})}, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    return run


class Interrupted(Exception):
    """What ``interrupt_at_step`` raises: a run stopped in the middle of an epoch (Ctrl-C)."""


@pytest.fixture
def interrupt_at_step(monkeypatch) -> Callable[[int], type[Exception]]:
    """``arm(n)``: the n-th training step from now on raises Interrupted after it ran, once; the
    steps after it (a resume) run as they would. The process-level kill -9 of the same is
    tests/_kill.py. Returns the exception type, for ``pytest.raises``."""
    from sclib.train import Trainer

    def arm(n: int) -> type[Exception]:
        step, seen = Trainer.train_step, {"n": 0}

        def train_step(self, *args, **kwargs):
            result = step(self, *args, **kwargs)
            seen["n"] += 1
            if seen["n"] == n:
                raise Interrupted(f"interrupted after step {n}")
            return result

        monkeypatch.setattr(Trainer, "train_step", train_step)
        return Interrupted

    return arm
