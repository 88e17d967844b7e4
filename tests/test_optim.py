"""The learning-rate schedule and LARS against explicit formulas."""

import math

import pytest
import torch

from sclib.core.optim import LARS, build_optimizer, lr_at, set_fused


def test_warmup_then_cosine_matches_the_recipe():
    total, warm = 1000, 100
    assert lr_at(0, total, warm, 0.4, 0.01, 0.0004) == pytest.approx(0.01)
    assert lr_at(50, total, warm, 0.4, 0.01, 0.0004) == pytest.approx(0.01 + 0.39 * 0.5)
    assert lr_at(100, total, warm, 0.4, 0.01, 0.0004) == pytest.approx(0.4)
    mid = 100 + 450
    assert lr_at(mid, total, warm, 0.4, 0.01, 0.0004) == pytest.approx(0.0004 + 0.5 * 0.3996)
    assert lr_at(total, total, warm, 0.4, 0.01, 0.0004) == pytest.approx(0.0004)
    step = 321
    expected = 0.0004 + 0.5 * (0.4 - 0.0004) * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
    assert lr_at(step, total, warm, 0.4, 0.01, 0.0004) == pytest.approx(expected)


def test_schedule_without_warmup_starts_at_peak():
    assert lr_at(0, 10, 0, 0.4, 0.01, 0.0) == pytest.approx(0.4)


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = build_optimizer("sgd", model, 0.1, 1e-4, 0.9)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_lars_step_matches_hand_computation():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    w.grad = torch.tensor([0.6, 0.8])                 # |g| = 1
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars": True}], lr=0.1, momentum=0.9, eta=0.001)
    opt.step()
    ratio = 0.001 * 5 / 1
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * ratio * torch.tensor([0.6, 0.8]))


def _trained(fused: bool, steps: int = 3) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    opt = build_optimizer("sgd", model, 0.1, 1e-2, 0.9, fused=fused)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_fused_sgd_takes_the_same_steps_as_plain_sgd():
    (plain, _), (fused, opt), (initial, _) = _trained(False), _trained(True), _trained(False, steps=0)
    assert all(g["fused"] for g in opt.param_groups)
    moved = []
    for a, b, start in zip(plain.parameters(), fused.parameters(), initial.parameters(), strict=True):
        moved.append(not torch.equal(b, start))
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)  # same update, rounding aside
    # every tensor moved but the first Linear's bias: BatchNorm right after it zeroes its gradient
    assert moved == [True, False, True, True, True, True]


def test_a_resumed_optimizer_uses_this_devices_kernel_not_the_checkpoints():
    _, saved = _trained(True)
    model, opt = _trained(False, steps=0)
    opt.load_state_dict(saved.state_dict())
    assert all(g["fused"] for g in opt.param_groups)  # load_state_dict brought the saving run's flag
    set_fused(opt, False)
    assert all(g["fused"] is None and g["foreach"] is None for g in opt.param_groups)
    lars = build_optimizer("lars", model, 0.1, 0.0, 0.9, fused=True)  # no fused form: left alone
    assert "fused" not in lars.param_groups[0]
