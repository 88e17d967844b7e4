"""The benchmark scripts: a fair comparison (same recipe, same views on both sides), a profile that
splits a step into its phases, and the device check end to end in its tiny CPU setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# benchmarks/ is on the path through pyproject's pytest pythonpath
import common
import op_count
import profile_step
import pytest
import throughput
import torch
from torchvision import transforms as T

from sclib.run.config import make_config
from sclib.train import PHASES

ROOT = Path(__file__).resolve().parents[1]


def recipe_trainer(tmp_path, setting: str, **overrides):
    return common.recipe_trainer(setting, str(tmp_path / setting), "cpu", batch=8, steps=2, **overrides)


@pytest.mark.parametrize("setting", list(common.SETTINGS))
def test_both_sides_follow_the_settings_recipe(tmp_path, setting):
    dataset, preset, changed, _ = common.SETTINGS[setting]
    trainer = recipe_trainer(tmp_path, setting)
    recipe = make_config(dataset, preset)
    for name in ("image_size", "heads", "mlp_hidden", "augment", "global_scale", "local_crops", "optimizer"):
        assert getattr(trainer.cfg, name) == getattr(recipe, name), name
    assert trainer.cfg.backbone == changed.get("backbone", recipe.backbone)
    reference = throughput.PerImageViews(trainer.data.train_images[:1], trainer.augment.cfg)
    views = throughput.check_same_views(trainer, reference)
    assert len(views) == 2 + recipe.local_crops == len(trainer.augment.specs())
    size = recipe.image_size
    assert views == [(1 if dataset == "mnist" else 3, size, size)] * 2


def test_multicrop_recipes_get_their_local_crops_on_both_sides(tmp_path):
    trainer = recipe_trainer(tmp_path, "cifar10", local_crops=2, local_size=16)
    reference = throughput.PerImageViews(trainer.data.train_images[:1], trainer.augment.cfg)
    assert throughput.check_same_views(trainer, reference) == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 2


def test_a_reference_with_other_views_is_refused(tmp_path):
    from dataclasses import replace

    trainer = recipe_trainer(tmp_path, "cifar10")
    more = throughput.PerImageViews(trainer.data.train_images[:1], replace(trainer.augment.cfg, local_crops=2))
    with pytest.raises(ValueError, match=r"unfair comparison: sclib makes 2 views .* the reference 4 views"):
        throughput.check_same_views(trainer, more)
    smaller = throughput.PerImageViews(trainer.data.train_images[:1], replace(trainer.augment.cfg, image_size=24))
    with pytest.raises(ValueError, match="unfair comparison"):
        throughput.check_same_views(trainer, smaller)


def test_reference_views_are_the_recipes_kinds(tmp_path):
    byol = throughput.reference_views(recipe_trainer(tmp_path, "cifar10").augment.cfg)
    kinds = [[type(t).__name__ for t in view.transforms] for view in byol]
    assert all(k[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"] for k in kinds)
    blur_p = [next(t.p for t in view.transforms if isinstance(t, T.RandomApply)
                   and isinstance(t.transforms[0], T.GaussianBlur)) for view in byol]
    assert blur_p == [1.0, 0.1]  # BYOL's asymmetric blur
    assert ["RandomSolarize" in k for k in kinds] == [False, True]
    affine = throughput.reference_views(recipe_trainer(tmp_path, "mnist").augment.cfg)
    for view in affine:
        names = [type(t).__name__ for t in view.transforms]
        assert names[0] == "RandomAffine" and "RandomHorizontalFlip" not in names and "RandomGrayscale" not in names


def test_reference_workers_default_to_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    args = throughput.build_parser().parse_args([])
    assert args.workers == 3
    assert args.settings is None  # main() picks per device: the seed recipes on CUDA, the CPU recipe on a CPU


def test_reference_loop_runs_the_trainers_step(tmp_path):
    trainer = common.recipe_trainer("mnist-small", str(tmp_path / "m"), "cpu", batch=4, steps=2, image_size=8,
                                    mlp_hidden=16, small_width=4)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    assert throughput.time_reference(trainer, steps=1, warmup=0, workers=0) > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))


def test_profile_splits_a_step_into_its_phases_and_finds_the_syncs(tmp_path):
    results = {}
    for tuned in (False, True):
        trainer = common.recipe_trainer("cifar10", str(tmp_path / f"p{tuned}"), "cpu", batch=8, steps=2,
                                      step_mode="sync-free" if tuned else "eager",
                                      backbone="small", small_width=4, image_size=8, mlp_hidden=16)
        results[tuned] = profile_step.profile_trainer(trainer)
    eager, tuned = results[False], results[True]
    for phase in ("augment", "forward", "loss", "backward", "optimizer"):
        assert eager.timeline_ms[phase] > 0 and eager.host_ms[phase] > 0, phase
    # the profiled phases and the unprofiled step are timed in different runs: how they compare depends on
    # what else the machine does meanwhile, so only that both were measured is asserted (issue 29)
    assert sum(eager.timeline_ms.values()) > 0 and eager.step_ms > 0
    table = profile_step.format_table(eager, "title")
    assert all(f"| {phase} |" in table for phase in PHASES) and "host syncs: " in table
    # the eager jitter syncs 4 times a view on a GPU (bincount, then tolist); the sync-free step not at all
    assert sum(n for site, n in eager.syncs.items() if "augment.py" in site) == 2 * 2 * 4 * eager.steps
    assert not any("augment.py" in site for site in tuned.syncs)


def test_op_count_sees_the_sync_free_step_launch_fewer_ops(tmp_path):
    counts = {}
    for tuned in (False, True):
        trainer = common.recipe_trainer("mnist-small", str(tmp_path / f"o{tuned}"), "cpu", batch=4, steps=1,
                                        step_mode="sync-free" if tuned else "eager", image_size=8, mlp_hidden=16,
                                        small_width=4)
        counts[tuned] = op_count.ops_per_phase(trainer)
    assert counts[True]["augment"] < counts[False]["augment"]
    assert counts[True]["optimizer"] < counts[False]["optimizer"]
    assert counts[True]["forward"] == counts[False]["forward"] > 0


@pytest.mark.slow
def test_gpu_check_runs_every_stage_in_its_tiny_setting():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for expected in ("== CIFAR-10, seed recipe", "2 views [(3, 8, 8), (3, 8, 8)]", "before: eager step",
                     "sync-free step: static-shape views", "reference DataLoader (0 workers", "== summary:",
                     "epoch before", "fair ratio", "goal: CIFAR-10 epoch <= 1.5 s", "| augment |", "host syncs:",
                     "self-classifier head   NMI", "k-means on pixels", "gpu_check: done"):
        assert expected in text, expected


def test_cpu_report_times_the_fp32_step_the_step_now_and_the_reference(capsys, monkeypatch):
    from sclib.run import build

    monkeypatch.setattr(common, "measured_peak_tflops", lambda device, seconds=1.0, dtype=None: 1.0)
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: True)
    rows = throughput.cpu_report(batch=4, steps=1, warmup=0, workers=0, settings=["cifar10-fast"])["cifar10-fast"]
    out = capsys.readouterr().out
    labels = [k for k in rows if isinstance(k, str) and k not in ("flops", "peak_bf16")]
    assert labels == ["fp32 eager step (the CPU step before)",
                      "the step now: bf16 autocast, channels-last (CPU with native bf16)",
                      "per-image DataLoader views + the step now"]
    assert all(rows[k] > 0 for k in labels) and rows["flops"] > 0
    now, before, ref = rows[labels[1]], rows[labels[0]], rows[labels[2]]
    assert f"{now / before:.2f}x the fp32 step, {now / ref:.2f}x the DataLoader reference" in out
    assert "% of the bf16 matmul rate" in out
