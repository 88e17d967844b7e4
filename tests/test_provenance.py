"""Provenance stays honest: fresh runs record fresh facts, resumes record their own, commits are sclib's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sclib.run.config import make_config
from sclib.run.lifecycle import git_state
from sclib.train import pretrain

REPO = Path(__file__).resolve().parents[1]
TINY = dict(image_size=8, mlp_hidden=32, mlp_out=16, batch_size=128, heads=[10, 20], device="cpu")


def _record(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_a_retrained_folder_records_fresh_provenance_and_a_resume_its_own(tmp_path):
    run = tmp_path / "run"
    cfg = make_config("digits", out=str(run), epochs=2, keep_epochs=[1, 2], **TINY)
    pretrain(cfg, progress=False)
    record = _record(run)
    record["provenance"].update(torch="0.0-old", git_commit="0" * 40, started="2000-01-01T00:00:00+00:00")
    (run / "config.json").write_text(json.dumps(record))

    # resume from the epoch-1 milestone: the old record stays, the resume adds its own facts
    (run / "metrics.json").unlink()
    (run / "checkpoints" / "last.pt").unlink()
    (run / "checkpoints" / "epoch_0002.pt").unlink()
    pretrain(cfg, progress=False)
    record = _record(run)
    assert record["provenance"]["torch"] == "0.0-old"
    (resumed,) = record["provenance"]["resumed"]
    assert resumed["epoch"] == 1 and resumed["torch"] == torch.__version__
    assert resumed["git_commit"] == git_state()[0] and "device" in resumed

    # retrain from epoch 0 (no checkpoint left): nothing of the old record survives
    (run / "metrics.json").unlink()
    shutil.rmtree(run / "checkpoints")
    pretrain(cfg, progress=False)
    fresh = _record(run)["provenance"]
    assert fresh["torch"] == torch.__version__ and fresh["git_commit"] == git_state()[0]
    assert "resumed" not in fresh and not fresh["started"].startswith("2000")


def test_the_commit_is_sclibs_own_or_unknown(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    commit, dirty = git_state()
    assert commit == head and isinstance(dirty, bool)
    # a copy of the package without its own .git, inside somebody else's repository
    other = tmp_path / "their-project"
    shutil.copytree(REPO / "sclib", other / "vendor" / "sclib")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=other, check=True)
    assert git_state(other / "vendor" / "sclib") == ("unknown", None)
    assert git_state(tmp_path / "no-repo-at-all") == ("unknown", None)


def test_dirty_means_the_package_changed_not_the_results(tmp_path):
    repo = tmp_path / "sclib-checkout"
    shutil.copytree(REPO / "sclib", repo / "sclib", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "results").mkdir()
    (repo / "results" / "summary.md").write_text("old numbers\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    assert git_state(repo / "sclib")[1] is False
    (repo / "results" / "summary.md").write_text("new numbers\n")  # a study rewrote its report
    assert git_state(repo / "sclib")[1] is False
    with (repo / "sclib" / "core" / "loss.py").open("a") as f:
        f.write("# an edit\n")
    assert git_state(repo / "sclib")[1] is True


@pytest.mark.parametrize("threads", [1, 2])
def test_provenance_records_the_thread_count_and_cpu_model(threads):
    from sclib.run.lifecycle import provenance

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        record = provenance(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert record["threads"] == threads
    assert isinstance(record["cpu_model"], str) and record["cpu_model"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():
        assert record["cpu_model"] in cpuinfo.read_text()
