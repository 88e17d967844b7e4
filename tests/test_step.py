"""The sync-free (GPU) training step on a CPU: same loss, gradients and weights as the eager
step, no host sync, and the compiled step within float tolerance of the eager one.

Tolerances: the sync-free step is bit-identical on a CPU in these tests (its augmentation uses the
same random numbers and per-sample arithmetic; the fused SGD step may round differently, so the
weights are compared at rtol 1e-5, atol 1e-6). The compiled step fuses and reorders float32
arithmetic: loss and gradients at rtol 1e-4, atol 1e-5.
"""

from __future__ import annotations

import math

import common  # benchmarks/common.py (pyproject's pytest pythonpath)
import pytest
import torch

from sclib.run.build import build_parts
from sclib.run.config import make_config
from sclib.train import PHASES, Trainer


def trainer(tmp_path, name: str, **overrides) -> Trainer:
    """BYOL views with two local crops (both augmentation groups), a small CNN, two heads."""
    # pinned to the small CNN and the first CIFAR recipe's views, which the tolerances were measured on
    values = dict(backbone="small", image_size=8, small_width=4, mlp_hidden=32, mlp_out=16, heads=[10, 20],
                  batch_size=16,
                  local_crops=2, local_size=6, epochs=1, device="cpu", keep_epochs=[], global_scale=[0.14, 1.0],
                  min_lr=0.0004)
    cfg = make_config("cifar10", "fast", out=str(tmp_path / name), **{**values, **overrides})
    return Trainer(build_parts(cfg, common.synthetic(64, 3, 8)), progress=False)


def one_step(t: Trainer) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Loss, gradients and weights after one train_step on a fixed batch and generator."""
    loss, _ = t.train_step(t.images[:16], torch.Generator().manual_seed(3), torch.arange(16))
    grads = {k: p.grad.clone() for k, p in t.model.named_parameters()}
    weights = {k: p.detach().clone() for k, p in t.model.named_parameters()}
    return loss, grads, weights


@pytest.mark.parametrize("mode", ["auto", "eager"])
def test_a_cpu_trainer_keeps_the_eager_step_unless_asked(tmp_path, mode):
    t = trainer(tmp_path, "default", step_mode=mode)
    assert t.sync_free is False and t.augment.sync_free is False
    assert all(g["fused"] is None for g in t.optimizer.param_groups)
    sync_free = trainer(tmp_path, "sync_free", step_mode="sync-free")
    assert sync_free.augment.sync_free and all(g["fused"] for g in sync_free.optimizer.param_groups)


def test_an_unknown_step_mode_is_refused(tmp_path):
    from sclib.run.config import ConfigError

    with pytest.raises(ConfigError, match="step_mode 'sync_free' is unknown; choose one of auto, sync-free, eager"):
        trainer(tmp_path, "bad", step_mode="sync_free")


def test_the_sync_free_step_gives_the_eager_loss_gradients_and_weights(tmp_path):
    eager = one_step(trainer(tmp_path, "eager", step_mode="eager"))
    sync_free = one_step(trainer(tmp_path, "sync_free", step_mode="sync-free"))
    assert torch.equal(eager[0], sync_free[0])
    for name in eager[1]:
        assert torch.equal(eager[1][name], sync_free[1][name]), name
        torch.testing.assert_close(sync_free[2][name], eager[2][name], rtol=1e-5, atol=1e-6)
    # the comparison means something: the step moved the weights
    assert any(g.abs().sum() > 0 for g in eager[1].values())


def test_the_sync_free_step_reads_nothing_back_to_the_host(tmp_path):
    counts = {}
    for sync_free in (False, True):
        t = trainer(tmp_path, f"t{sync_free}", step_mode="sync-free" if sync_free else "eager")
        t.train_step(t.images[:16], torch.Generator().manual_seed(0))  # first call: cached constants
        with common.HostSyncCounter() as counter:
            t.train_step(t.images[:16], torch.Generator().manual_seed(1), torch.arange(16))
        counts[sync_free] = counter.sites
    assert counts[True] == {}, f"the sync-free step would sync a GPU at {dict(counts[True])}"
    # the counter does see the eager jitter's bincount().tolist(): 4 slots x 4 views, twice
    assert sum(counts[False].values()) == 32 and all("augment.py" in site for site in counts[False])


def test_step_phases_are_profiler_ranges_in_order(tmp_path):
    t = trainer(tmp_path, "phases")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t.train_epoch()  # 4 steps; on a CPU the finite check runs each step
    ranges = sorted((e for e in prof.events() if e.name.startswith("sclib.") and e.name != "sclib.collective"),
                    key=lambda e: e.time_range.start)
    step = ["data", "augment", "forward", "loss", "backward", "optimizer", "sync"]
    assert [e.name for e in ranges] == [f"sclib.{name}" for name in step] * t.steps_per_epoch
    assert set(step) == set(PHASES)


@pytest.mark.slow
def test_the_compiled_sync_free_step_matches_the_eager_step_and_reports_compile_time(tmp_path, capsys):
    # fresh trainers start from the same weights; the compiled one compiles on this first step
    # in fp32: bf16's own tolerance is tests/test_precision.py's
    a = one_step(trainer(tmp_path, "eager", step_mode="eager", amp=False))
    b = one_step(trainer(tmp_path, "compiled", step_mode="sync-free", compile=True, amp=False))
    torch.testing.assert_close(b[0], a[0], rtol=1e-4, atol=1e-5)
    for name in a[1]:
        torch.testing.assert_close(b[1][name], a[1][name], rtol=1e-4, atol=1e-5, msg=name)
    again = trainer(tmp_path, "again", step_mode="sync-free", compile=True)
    row = again.train_epoch()
    seconds = again.progress.compile_seconds
    assert seconds is not None and seconds > 0 and math.isfinite(row["loss"])
    assert "torch.compile (default): the first step took" in capsys.readouterr().err


def test_an_unknown_compile_mode_is_refused(tmp_path):
    from sclib.run.config import ConfigError

    with pytest.raises(ConfigError, match="compile_mode 'fastest' is unknown"):
        trainer(tmp_path, "bad", compile_mode="fastest")
