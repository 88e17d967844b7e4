"""A run's lifecycle: a seed's config and folder, whether a folder may be resumed, its writer
lock, and the provenance config.json records (code, versions, hardware). Training itself is
``sclib.train``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy
import sklearn
import torch
import torchvision

from sclib import __version__
from sclib.core import distributed
from sclib.run.config import Config, ConfigError, differences, load_config
from sclib.run.config import record as config_record
from sclib.run.files import (
    LOCK_NAME,
    FolderLock,
    read_json,
    write_json,
)
from sclib.run.paths import RunPaths, seed_folder


def seed_configs(base: Config, seeds: list[int] | None) -> list[Config]:
    """One config per seed, in sibling folders OUT/seed<N> of ``base.out``; without seeds, ``base``.

    ``base`` is the recipe resolved once (``Recipe.resolve``); a seed changes only ``seed`` and
    ``out``, which no recipe rule reads, so each seed's config is ``base`` with those two (checked).
    """
    if not seeds:
        return [base]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {seeds}")
    return [dataclasses.replace(base, seed=seed, out=str(seed_folder(base.out, seed))).validate() for seed in seeds]


def check_resumable(cfg: Config, paths: RunPaths) -> None:
    """Refuse to continue a run folder made with a different config, saying what differs."""
    if paths.root.exists() and not paths.root.is_dir():
        raise ConfigError(f"out {paths.root} is a file, not a folder; choose another --out")
    if paths.config.exists():
        diffs = differences(load_config(paths.config), cfg)
        if diffs and holds_results(paths):
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diffs.items())
            raise ConfigError(
                f"run folder {paths.root} was made with a different config ({listed}); "
                "rerun with the same parameters to resume, or choose another --out"
            )
    elif paths.root.is_dir() and any(p.name != LOCK_NAME for p in paths.root.iterdir()):
        raise ConfigError(f"out {paths.root} is a non-empty folder that is not a run folder; choose another --out")


def lock_run(paths: RunPaths) -> FolderLock:
    """The run folder's writer lock (a context manager): a second process that would write the same
    run refuses in one line naming the holder, instead of both writing and one run's files
    silently replacing the other's. A lock left by a killed process does not block."""
    return FolderLock(paths.root, "run folder")


def holds_results(paths: RunPaths) -> bool:
    """Whether a run folder holds anything a new config would clobber: a checkpoint or a result.

    A run stopped before its first checkpoint (say, a non-finite loss in epoch 1) holds only its
    config.json, and a fresh start into it, with other parameters, loses nothing.
    """
    return any(paths.checkpoints.glob("*.pt")) or any(
        p.exists() for p in (paths.metrics, paths.eval, paths.probe, paths.arrays))


def provenance(device: torch.device, numerics: str = "") -> dict[str, Any]:
    """What produced a run (or a resumed stretch of it), so a number can be traced to code and hardware."""
    commit, dirty = git_state()
    return {
        "sclib": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "precision": numerics,
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),  # the result depends on it: reductions split differently
        "world_size": distributed.world_size(),
        "started": _now(),
    }


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what ``platform`` knows), for provenance."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_PACKAGE = Path(__file__).resolve().parents[1]  # this very package's folder (sclib/)


def git_state(package: Path = _PACKAGE) -> tuple[str, bool | None]:
    """(commit, dirty) of the repository that holds this very package, else ("unknown", None).

    A copy of sclib without its own ``.git`` placed inside another repository must not report
    that repository's commit, so the repository's top level has to contain this package.
    ``dirty`` means uncommitted changes to the package itself: a study rewriting ``results/``
    changes no code.
    """
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=package)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top.strip()).resolve() / package.name != package:
        return "unknown", None
    commit = (git("rev-parse", "HEAD") or "").strip() or "unknown"
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit, (bool(status.strip()) if status is not None else None)


def record_start(paths: RunPaths, cfg: Config, started: dict[str, Any], counts: dict[str, Any],
                 resumed_at: int | None = None) -> None:
    """Write config.json as a run (re)starts; ``started`` is :func:`provenance` of this process.

    A run that starts from epoch 0 records fresh provenance (even in an old folder whose
    checkpoints are gone); a resume at epoch ``resumed_at`` appends its own.
    """
    if resumed_at is not None and paths.config.exists():
        record = read_json(paths.config, kind=dict)
        record.setdefault("provenance", {}).setdefault("resumed", []).append({**started, "epoch": resumed_at})
    else:
        record = {**config_record(cfg, paths.root), "provenance": started, "images": counts}
    write_json(paths.config, record)


def record_finish(paths: RunPaths) -> None:
    """Stamp config.json's provenance with the time the run finished."""
    record = read_json(paths.config, kind=dict)
    record.setdefault("provenance", {})["finished"] = _now()
    write_json(paths.config, record)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
