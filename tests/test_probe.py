"""Probes: the kNN vote against a brute-force loop, and a linear probe that learns what is linear."""

import math

import numpy as np
import pytest
import torch
from analysis import straightforward_linear_probe  # benchmarks/analysis.py: the probe as first written

from sclib.eval.probe import convergence_warning, knn_probe, linear_probe


def separable(n, dim=6, classes=4, seed=0, scale=None):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 4
    y = torch.randint(0, classes, (n,), generator=gen)
    x = centres[y] + torch.randn(n, dim, generator=gen)
    if scale is not None:
        x = x * scale
    return x, y


def test_linear_probe_learns_a_linearly_separable_problem():
    x, y = separable(600)
    result = linear_probe(x[:400], y[:400], x[400:], y[400:], 4, epochs=30, batch_size=64, lr=1e-2)
    # four well-separated classes: the true class is almost never ranked last of four
    assert result["top1"] > 0.9 and result["top3"] > 0.99


def test_linear_probe_does_not_depend_on_the_feature_scale():
    # Backbone features can be tiny or huge; the probe standardises them, so the seed's fixed
    # learning rate means the same thing on every backbone.
    results = []
    for scale in (1e-3, 1.0, 1e3):
        x, y = separable(600, scale=scale)
        results.append(linear_probe(x[:400], y[:400], x[400:], y[400:], 4, epochs=20, batch_size=64, lr=1e-2))
    assert results[0]["top1"] > 0.9
    for other in results[1:]:
        assert other["top1"] == pytest.approx(results[0]["top1"], abs=0.01)


def test_linear_probe_is_no_better_than_chance_on_noise():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(800, 6, generator=gen), torch.randint(0, 4, (800,), generator=gen)
    result = linear_probe(x[:600], y[:600], x[600:], y[600:], 4, epochs=10)
    assert result["top1"] < 0.4


def brute_force_knn(train_x, train_y, eval_x, classes, k, temperature):
    train_n = [v / np.linalg.norm(v) for v in train_x.numpy()]
    scores = []
    for q in eval_x.numpy():
        q = q / np.linalg.norm(q)
        sims = sorted(((float(q @ t), int(c)) for t, c in zip(train_n, train_y.numpy())), reverse=True)[:k]
        votes = [0.0] * classes
        for sim, c in sims:
            votes[c] += math.exp(sim / temperature)
        scores.append(votes)
    return np.array(scores)


def test_knn_probe_matches_brute_force_votes():
    x, y = separable(120, seed=3)
    train_x, train_y, eval_x, eval_y = x[:80], y[:80], x[80:], y[80:]
    scores = brute_force_knn(train_x, train_y, eval_x, 4, k=7, temperature=0.5)
    expected_top1 = float((scores.argmax(1) == eval_y.numpy()).mean())
    top3 = np.argsort(-scores, axis=1)[:, :3]
    expected_top3 = float(np.mean([t in row for t, row in zip(eval_y.numpy(), top3)]))
    result = knn_probe(train_x, train_y, eval_x, eval_y, 4, k=7, temperature=0.5)
    assert result["top1"] == pytest.approx(expected_top1) and result["top3"] == pytest.approx(expected_top3)


def noisy_problem(n, seed):
    """Overlapping classes (a probe reaches about 60-80 %), so a wrong optimiser shows in the accuracy."""
    centres = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))  # one problem, many samples
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=gen)
    return centres[y] * 1.5 + torch.randn(n, 16, generator=gen) * 3 + 7, y  # off-centre, as real features are


@pytest.mark.parametrize("n, batch_size, epochs", [(700, 64, 12), (1000, 512, 30), (333, 100, 7)])
def test_fast_linear_probe_equals_the_straightforward_loop(n, batch_size, epochs, monkeypatch):
    import sclib.eval.probe as probe

    train_x, train_y = noisy_problem(n, seed=n)
    eval_x, eval_y = noisy_problem(400, seed=n + 1)
    schedules = []
    real = probe.cosine_lrs
    monkeypatch.setattr(probe, "cosine_lrs", lambda total, lr: schedules.append(real(total, lr)) or schedules[-1])
    # a higher lr than the seed's 4e-4, so that a few hundred steps get somewhere
    fast = linear_probe(train_x, train_y, eval_x, eval_y, 5, epochs=epochs, batch_size=batch_size, lr=0.03, seed=3)
    scores, lrs = straightforward_linear_probe(train_x, train_y, eval_x, eval_y, 5, epochs, batch_size, lr=0.03,
                                                  seed=3)
    # the same schedule, step for step
    assert len(schedules) == 1
    np.testing.assert_allclose(schedules[0], lrs, rtol=1e-12, atol=1e-15)
    # the same accuracy: the fused AdamW rounds differently, so allow one eval sample of 400 to flip
    top1 = (scores.argmax(1) == eval_y).float().mean().item()
    assert 0.4 < top1 < 0.95
    assert abs(fast["top1"] - top1) <= 1 / 400 + 1e-9


def test_linear_probe_restores_the_thread_count():
    before = torch.get_num_threads()
    x, y = separable(50)
    linear_probe(x, y, x, y, 4, epochs=1)
    assert torch.get_num_threads() == before


# -- convergence of a probe cut short --------------------------------------------------------------


def _digits_sized(dim):
    """Ten separable classes split like digits (1257 train / 543 eval): 3 steps an epoch at batch 512."""
    x, y = separable(1800, dim=dim, classes=10)
    return x[:1257], y[:1257], x[1257:], y[1257:]


def test_a_probe_of_5_epochs_has_not_converged_and_one_of_100_has():
    data = _digits_sized(128)
    assert linear_probe(*data, 10, epochs=5)["top1"] < 0.5 < 0.99 < linear_probe(*data, 10, epochs=100)["top1"]
    why = convergence_warning(*data, 10, epochs=5)
    assert why is not None and "5 epochs (15 steps)" in why and "random start" in why
    assert convergence_warning(*data, 10, epochs=100) is None


def test_a_probe_that_twice_the_epochs_still_improves_has_not_converged():
    data = _digits_sized(64)  # 100 epochs: 98.16 % top-1, 200 epochs: 100 %
    why = convergence_warning(*data, 10, epochs=100)
    assert why is not None and "100 epochs (300 steps) give 98.16 % top-1, 200 give 100.00 %" in why


def test_the_check_leaves_the_probe_itself_unchanged():
    data = _digits_sized(64)
    before = linear_probe(*data, 10, epochs=20)
    convergence_warning(*data, 10, epochs=20)
    assert linear_probe(*data, 10, epochs=20) == before
