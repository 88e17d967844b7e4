"""Fault matrix: faults really injected into pre-training runs, and what must survive them.

| case (test id)                          | injected how                      | must hold                              |
|-----------------------------------------|-----------------------------------|----------------------------------------|
| kill -9 during a step (epoch 3)         | _kill.py step:21, subprocess      | exit -9; every visible file whole;     |
|                                         |                                   | rerun -> identical tensors             |
| kill -9 while writing last.pt (epoch 2) | _kill.py checkpoint:2 (half       | exit -9; last.pt still epoch 1; rerun  |
|                                         | the bytes)                        | -> identical, no *.tmp                 |
| kill -9 while writing metrics.json      | _kill.py metrics:1 (half the      | exit -9; no metrics.json; rerun ->     |
|                                         | bytes)                            | identical, same metrics                |
| truncated / bit-flipped / empty /       | last.pt damaged after a kill in   | CheckpointError names last.pt; resume  |
| garbage last.pt                         | epoch 3                           | falls back to epoch_0001               |
| resume from a truncated last.pt         | CLI rerun                         | warns naming last.pt, ends with        |
|                                         |                                   | identical tensors                      |
| every checkpoint damaged                | CLI rerun                         | exit 2, one line saying how to start   |
|                                         |                                   | over, files untouched                  |
| NaN in a batch (epoch 2)                | Augmenter patched to put a NaN in | exit 2, one line; last.pt = the        |
|                                         | one image                         | epoch-1 state, all finite              |
| full disk: write / rename fails         | writer's file or os.replace raise | exit 2, one line naming last.pt;       |
| (ENOSPC)                                | ENOSPC                            | last.pt intact; no *.tmp               |
| read-only run folder                    | chmod 0o555 (as root: mkstemp     | exit 2, one line; every file           |
|                                         | raises EROFS)                     | byte-identical                         |

The kills come from ``tests/_kill.py``, which runs the CLI with the package patched from outside
(no production function carries a fault hook). The kill tests share one module fixture: the
three killed runs and their reruns go as concurrent subprocesses while the uninterrupted
baseline trains in this process (same code, same threads, so bit-identical on CPU).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from sclib.run import checkpoint
from sclib.run.checkpoint import CheckpointError
from sclib.run.files import LOCK_NAME

KILL = Path(__file__).with_name("_kill.py")
EPOCHS = 3
STEPS_PER_EPOCH = 9  # 1257 digits train images // batch 128

# id -> (tests/_kill.py's POINT:N, epoch of last.pt after the kill)
KILLS = {
    "kill -9 during a step (epoch 3)": ("step:21", 2),
    "kill -9 while writing last.pt (epoch 2)": ("checkpoint:2", 1),
    "kill -9 while writing metrics.json": ("metrics:1", 3),
}


def run_args(tiny_args: tuple[str, ...], out: Path) -> list[str]:
    return ["pretrain", *tiny_args, "--epochs", str(EPOCHS), "--keep-epochs", "1", "--no-progress", "--out", str(out)]


def all_tensors(obj, prefix: str = ""):
    """Every tensor of a nested checkpoint state, keyed by its path."""
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from all_tensors(value, f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from all_tensors(value, f"{prefix}/{i}")


def assert_same_tensors(a: dict, b: dict) -> None:
    ta, tb = dict(all_tensors(a)), dict(all_tensors(b))
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"tensors differ: {different[:5]}"


def temp_files(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*") if p.name.endswith(".tmp"))


def assert_every_file_whole(run: Path) -> None:
    """Each json/csv/pt a reader would open parses completely (temp files and the writer lock,
    which records only who holds the folder, are not such files)."""
    for path in sorted(p for p in run.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
                       and p.name != LOCK_NAME):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            with path.open() as handle:
                reader = csv.DictReader(handle)
                rows = list(reader)
            assert reader.fieldnames and all(None not in r and None not in r.values() for r in rows), path
        elif path.suffix == ".pt":
            checkpoint.load(path)
        else:
            pytest.fail(f"unexpected file in a run folder: {path}")


def history_epochs(run: Path) -> list[int]:
    with (run / "history.csv").open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file's bytes but the writer lock's (it names the last process that took it)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and p.name != LOCK_NAME}


def last_state(run: Path) -> dict:
    return checkpoint.load(run / "checkpoints" / "last.pt")


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs use one thread, like the subprocesses, so all of them compute bit-identically.

    With two threads per process and four processes on two cores, 2 of 3 reruns once ended 1e-7
    away from the baseline; one thread everywhere removes any dependence on how work is split.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def kills(tmp_path_factory, sclib_command, sclib_env, tiny_args):
    """Kill three runs with SIGKILL at three points, record the wreckage, then rerun each."""
    root = tmp_path_factory.mktemp("kills")
    env = {**sclib_env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def launch(name: str, kill_at: str | None = None) -> subprocess.Popen:
        log = (root / f"{name}.log").open("a")
        args = run_args(tiny_args, root / name)
        command = sclib_command(*args) if kill_at is None else [sys.executable, str(KILL), kill_at, *args]
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    names = {case: f"killed{i}" for i, case in enumerate(KILLS)}
    procs = {case: launch(names[case], spec) for case, (spec, _) in KILLS.items()}
    straight = launch("straight")  # the uninterrupted baseline, alongside
    killed = {case: proc.wait(timeout=600) for case, proc in procs.items()}

    after_kill = {}
    for case, name in names.items():
        run = root / name
        after_kill[case] = {"temps": [(p.name, p.stat().st_size) for p in temp_files(run)],
                            "files": sorted(snapshot(run)), "log": (root / f"{name}.log").read_text(),
                            "last_epoch": int(last_state(run)["epoch"]), "history": history_epochs(run)}
        assert_every_file_whole(run)  # what a kill leaves must itself be readable, before any rerun
    # copies for the corruption and disk tests: last.pt epoch 2 + epoch_0001.pt, and last.pt epoch 1
    shutil.copytree(root / names["kill -9 during a step (epoch 3)"], root / "killed_in_epoch_3")
    shutil.copytree(root / names["kill -9 while writing last.pt (epoch 2)"], root / "killed_after_epoch_1")

    reruns = {case: launch(name) for case, name in names.items()}
    rerun_codes = {case: proc.wait(timeout=600) for case, proc in reruns.items()}
    assert straight.wait(timeout=600) == 0, (root / "straight.log").read_text()
    logs = {case: (root / f"{name}.log").read_text() for case, name in names.items()}
    return {"root": root, "names": names, "killed": killed, "after_kill": after_kill, "reruns": rerun_codes,
            "logs": logs}


@pytest.mark.parametrize("case", KILLS)
def test_kill_9_really_killed_the_run_at_that_point(kills, case):
    spec, last_epoch = KILLS[case]
    wreck = kills["after_kill"][case]
    assert kills["killed"][case] == -9, wreck["log"]
    assert wreck["last_epoch"] == last_epoch
    assert wreck["history"] == list(range(1, last_epoch + 1))
    half_written = [name for name, size in wreck["temps"] if size > 0]
    if spec.startswith("step"):
        assert wreck["temps"] == []
    elif spec.startswith("checkpoint"):
        assert len(half_written) == 1 and half_written[0].startswith(".last.pt.")
    else:
        assert len(half_written) == 1 and half_written[0].startswith(".metrics.json.")
        assert "metrics.json" not in wreck["files"]


@pytest.mark.parametrize("case", KILLS)
def test_rerun_after_kill_9_ends_with_identical_tensors(kills, case):
    assert kills["reruns"][case] == 0, kills["logs"][case]
    run, straight = kills["root"] / kills["names"][case], kills["root"] / "straight"
    resumed, baseline = last_state(run), last_state(straight)
    assert resumed["epoch"] == baseline["epoch"] == EPOCHS
    assert_same_tensors(resumed, baseline)  # model, optimiser momentum, everything
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in baseline["history"]]
    assert json.loads((run / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())


@pytest.mark.parametrize("case", KILLS)
def test_rerun_after_kill_9_leaves_no_half_written_file(kills, case):
    run = kills["root"] / kills["names"][case]
    assert temp_files(run) == []
    assert_every_file_whole(run)
    assert history_epochs(run) == [1, 2, 3]
    record = json.loads((run / "config.json").read_text())
    assert record["provenance"]["resumed"] and "finished" in record["provenance"]


# -- damaged checkpoints -----------------------------------------------------------------------

def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_bits(data: bytes) -> bytes:
    """Flip 64 bytes in the middle: inside the tensor data, where the zip layer does not look."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]


CORRUPTIONS = {
    "truncated last.pt": _truncate,
    "bit-flipped last.pt": _flip_bits,
    "empty last.pt": lambda data: b"",
    "garbage last.pt": lambda data: bytes(range(256)) * 64,
}


@pytest.fixture
def killed_in_epoch_3(kills, tmp_path) -> Path:
    """A run whose last.pt is epoch 2 and whose only milestone is epoch_0001.pt."""
    run = tmp_path / "run"
    shutil.copytree(kills["root"] / "killed_in_epoch_3", run)
    return run


@pytest.mark.parametrize("damage", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_damaged_last_pt_is_detected_naming_the_file(killed_in_epoch_3, damage):
    last = killed_in_epoch_3 / "checkpoints" / "last.pt"
    last.write_bytes(damage(last.read_bytes()))
    with pytest.raises(CheckpointError, match=r"last.pt"):
        checkpoint.load(last)


@pytest.mark.parametrize("damage", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_damaged_last_pt_falls_back_to_newest_intact_milestone(killed_in_epoch_3, damage, capsys):
    folder = killed_in_epoch_3 / "checkpoints"
    last = folder / "last.pt"
    last.write_bytes(damage(last.read_bytes()))
    state = checkpoint.load_latest(folder)
    assert state["epoch"] == 1
    assert_same_tensors(state, checkpoint.load(folder / "epoch_0001.pt"))
    err = capsys.readouterr().err
    assert str(last) in err and "epoch_0001.pt" in err


def test_resume_from_a_truncated_last_pt_ends_with_identical_tensors(kills, killed_in_epoch_3, cli, tiny_args):
    last = killed_in_epoch_3 / "checkpoints" / "last.pt"
    last.write_bytes(_truncate(last.read_bytes()))
    result = cli(*run_args(tiny_args, killed_in_epoch_3))
    assert result.code == 0, result.err_lines
    assert any(str(last) in line and "truncated or corrupted" in line for line in result.err_lines)
    assert_same_tensors(last_state(killed_in_epoch_3), last_state(kills["root"] / "straight"))
    assert temp_files(killed_in_epoch_3) == []


def test_every_checkpoint_damaged_stops_and_says_how_to_start_over(killed_in_epoch_3, cli, tiny_args):
    for path in (killed_in_epoch_3 / "checkpoints").glob("*.pt"):
        path.write_bytes(_truncate(path.read_bytes()))
    before = snapshot(killed_in_epoch_3)
    result = cli(*run_args(tiny_args, killed_in_epoch_3))
    assert result.code == 2
    errors = [line for line in result.err_lines if line.startswith("sclib: error:")]
    assert len(errors) == 1 and "start over" in errors[0] and "no intact checkpoint" in errors[0]
    assert snapshot(killed_in_epoch_3) == before


# -- non-finite loss ---------------------------------------------------------------------------

def test_nan_in_a_batch_stops_the_run_and_keeps_the_last_good_state(kills, cli, tiny_args, tmp_path, monkeypatch):
    import sclib.run.build
    from sclib.core.augment import Augmenter

    calls = {"n": 0}

    class NaNFromEpoch2(Augmenter):
        def __call__(self, images, generator=None):
            views = super().__call__(images, generator)  # same random draws as a clean run
            calls["n"] += 1
            if calls["n"] > STEPS_PER_EPOCH:
                views[0][0, 0, 0, 0] = float("nan")  # one pixel of one image
            return views

    monkeypatch.setattr(sclib.run.build, "Augmenter", NaNFromEpoch2)
    run = tmp_path / "nan"
    result = cli(*run_args(tiny_args, run))
    assert result.code == 2
    assert len(result.err_lines) == 1, result.err_lines
    line = result.err_lines[0]
    assert line.startswith("sclib: error:") and "non-finite" in line and "epoch 2" in line and "last.pt" in line
    assert calls["n"] == STEPS_PER_EPOCH + 1  # stopped at the first bad step
    state = last_state(run)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for _, t in all_tensors(state) if t.is_floating_point())
    assert_same_tensors(state, checkpoint.load(kills["root"] / "straight" / "checkpoints" / "epoch_0001.pt"))
    assert temp_files(run) == [] and not (run / "metrics.json").exists()
    assert_every_file_whole(run)


# -- full disk, read-only folder ---------------------------------------------------------------

class _FullDiskFile:
    """A file whose write lands half its bytes, then fails as on a full disk."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)


def _full_disk_on_write(monkeypatch) -> None:
    real_mkstemp, real_fdopen, doomed = tempfile.mkstemp, os.fdopen, set()

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        if Path(name).name.startswith(".last.pt."):
            doomed.add(fd)
        return fd, name

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        return _FullDiskFile(handle) if fd in doomed else handle

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)


def _full_disk_on_rename(monkeypatch) -> None:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "last.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


FULL_DISK = {"full disk: write fails (ENOSPC)": _full_disk_on_write,
             "full disk: rename fails (ENOSPC)": _full_disk_on_rename}


@pytest.fixture
def killed_after_epoch_1(kills, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(kills["root"] / "killed_after_epoch_1", run)
    for stale in temp_files(run):  # the kill's half-written temp file is not what these tests look at
        stale.unlink()
    return run


@pytest.mark.parametrize("inject", FULL_DISK.values(), ids=FULL_DISK.keys())
def test_full_disk_gives_a_clear_error_and_keeps_last_pt(killed_after_epoch_1, cli, tiny_args, monkeypatch, inject):
    run = killed_after_epoch_1
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    inject(monkeypatch)
    result = cli(*run_args(tiny_args, run))  # resumes at epoch 2, whose last.pt write fails
    monkeypatch.undo()
    assert result.code == 2
    assert len(result.err_lines) == 1, result.err_lines
    line = result.err_lines[0]
    assert line.startswith("sclib: error:") and str(last) in line and "No space left on device" in line
    assert last.read_bytes() == before and last_state(run)["epoch"] == 1
    assert temp_files(run) == []
    assert_every_file_whole(run)


def _writes_are_refused(folder: Path) -> bool:
    try:
        probe = folder / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
        return False
    except OSError:
        return True


def test_read_only_run_folder_gives_a_clear_error_and_changes_nothing(killed_after_epoch_1, cli, tiny_args,
                                                                      monkeypatch):
    run = killed_after_epoch_1
    before = snapshot(run)
    folders = [run, run / "checkpoints"]
    for folder in folders:
        folder.chmod(0o555)
    try:
        if not _writes_are_refused(run):  # root ignores permissions: simulate a read-only mount instead
            real_mkstemp = tempfile.mkstemp

            def mkstemp(*args, dir=None, **kwargs):
                if dir is not None and Path(dir).resolve().is_relative_to(run.resolve()):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
                return real_mkstemp(*args, dir=dir, **kwargs)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        result = cli(*run_args(tiny_args, run))
        monkeypatch.undo()
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert result.code == 2
    assert len(result.err_lines) == 1, result.err_lines
    line = result.err_lines[0]
    assert line.startswith("sclib: error: cannot write") and str(run) in line and "writable" in line
    assert snapshot(run) == before
