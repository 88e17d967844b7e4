"""SelfClassifierLoss against a slow, explicit float64 reference written here."""

from __future__ import annotations

import math

import pytest
import torch

from sclib.core.loss import SelfClassifierLoss, clusters_used, view_pairs

ROW_TAU, COL_TAU, EPS = 0.1, 0.05, 1e-8

# Ordered (target view, prediction view) pairs, enumerated by hand.
PAIRS_2 = [(0, 1), (1, 0)]
PAIRS_2_PLUS_2 = [
    (0, 1), (1, 0),
    (0, 2), (0, 3), (1, 2), (1, 3),
    (2, 0), (2, 1), (3, 0), (3, 1),
]
PAIRS_ALL_4 = [(i, j) for i in range(4) for j in range(4) if i != j]


def slow_term(zt, zp, row_tau=ROW_TAU, col_tau=COL_TAU, eps=EPS, swap_dims=False):
    """One view pair with nested loops over samples and classes (plain floats)."""
    n, c = len(zt), len(zt[0])
    # target: softmax over the batch (per class), then each row scaled to sum to 1
    tgt = [[0.0] * c for _ in range(n)]
    for k in range(c):
        denom = sum(math.exp(zt[m][k] / col_tau) for m in range(n))
        for a in range(n):
            tgt[a][k] = math.exp(zt[a][k] / col_tau) / denom
    if swap_dims:  # deliberately wrong: softmax over classes for the target
        for a in range(n):
            denom = sum(math.exp(zt[a][q] / col_tau) for q in range(c))
            for k in range(c):
                tgt[a][k] = math.exp(zt[a][k] / col_tau) / denom
    for a in range(n):
        s = sum(tgt[a])
        for k in range(c):
            tgt[a][k] /= s
    # prediction: softmax over classes (per sample), then each column scaled to sum to 1
    pred = [[0.0] * c for _ in range(n)]
    for a in range(n):
        denom = sum(math.exp(zp[a][q] / row_tau) for q in range(c))
        for k in range(c):
            pred[a][k] = math.exp(zp[a][k] / row_tau) / denom
    for k in range(c):
        s = sum(pred[a][k] for a in range(n))
        for a in range(n):
            pred[a][k] /= s
    total = 0.0
    for a in range(n):
        for k in range(c):
            total += tgt[a][k] * math.log(n / c * pred[a][k] + eps)
    return -total / n


def slow_loss(outputs, pairs, **kw):
    terms = []
    for views in outputs:
        lists = [v.detach().double().tolist() for v in views]
        for i, j in pairs:
            terms.append(slow_term(lists[i], lists[j], **kw))
    return sum(terms) / len(terms)


def random_outputs(heads_classes, n, n_views, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [
        [(scale * torch.randn(n, c, generator=g, dtype=dtype)).requires_grad_() for _ in range(n_views)]
        for c in heads_classes
    ]


def test_view_pairs_skip_local_local():
    assert view_pairs(2) == PAIRS_2
    assert sorted(view_pairs(4)) == sorted(PAIRS_2_PLUS_2)


@pytest.mark.parametrize("heads_classes", [(5,), (3, 7, 4)])
def test_matches_slow_reference_two_views(heads_classes):
    outputs = random_outputs(heads_classes, n=9, n_views=2, seed=1)
    got = SelfClassifierLoss()(outputs)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(slow_loss(outputs, PAIRS_2), rel=1e-10, abs=1e-12)


def test_matches_slow_reference_multicrop():
    outputs = random_outputs((4, 6), n=7, n_views=4, seed=2)
    got = SelfClassifierLoss()(outputs).item()
    assert got == pytest.approx(slow_loss(outputs, PAIRS_2_PLUS_2), rel=1e-10, abs=1e-12)
    # The reference would notice if local-local pairs were included.
    assert abs(got - slow_loss(outputs, PAIRS_ALL_4)) > 1e-3


def test_other_temperatures_and_eps():
    outputs = random_outputs((5,), n=6, n_views=3, seed=3)
    kw = dict(row_tau=0.3, col_tau=0.2, eps=1e-3)
    got = SelfClassifierLoss(**kw)(outputs).item()
    pairs = [(0, 1), (1, 0), (0, 2), (1, 2), (2, 0), (2, 1)]
    assert got == pytest.approx(slow_loss(outputs, pairs, **kw), rel=1e-10, abs=1e-12)


def test_reference_discriminates_swapped_softmax():
    outputs = random_outputs((5,), n=8, n_views=2, seed=4)
    got = SelfClassifierLoss()(outputs).item()
    wrong = slow_loss(outputs, PAIRS_2, swap_dims=True)
    assert abs(got - wrong) > 1e-3


def test_balanced_confident_beats_collapse():
    c, k = 4, 3
    n = c * k
    labels = torch.arange(n) % c
    balanced = 10.0 * torch.nn.functional.one_hot(labels, c).double()
    collapsed = 10.0 * torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), c).double()
    loss = SelfClassifierLoss()
    balanced_loss = loss([[balanced, balanced.clone()]]).item()
    collapsed_loss = loss([[collapsed, collapsed.clone()]]).item()
    # Balanced one-hot: N/C * pred = 1 on the assigned class -> loss ~ 0;
    # collapse: uniform target against 1/N columns -> loss ~ log C.
    assert balanced_loss == pytest.approx(0.0, abs=1e-4)
    assert collapsed_loss == pytest.approx(math.log(c), abs=1e-4)
    assert collapsed_loss > balanced_loss + 1.0


def test_gradients_reach_both_views():
    outputs = random_outputs((5,), n=8, n_views=2, seed=5)
    SelfClassifierLoss()(outputs).backward()
    for v in outputs[0]:
        assert v.grad is not None
        assert v.grad.abs().sum().item() > 1e-6


def test_gradient_matches_finite_difference():
    outputs = random_outputs((3,), n=4, n_views=2, seed=6)
    SelfClassifierLoss()(outputs).backward()
    lists = [[v.detach().double().clone() for v in outputs[0]]]
    h = 1e-6
    for view in range(2):
        for a, k in [(0, 0), (2, 1), (3, 2)]:
            plus = [[t.clone() for t in lists[0]]]
            minus = [[t.clone() for t in lists[0]]]
            plus[0][view][a, k] += h
            minus[0][view][a, k] -= h
            fd = (slow_loss(plus, PAIRS_2) - slow_loss(minus, PAIRS_2)) / (2 * h)
            assert outputs[0][view].grad[a, k].item() == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_float32_under_bf16_autocast():
    torch.manual_seed(7)
    head = torch.nn.Linear(16, 6)
    x1, x2 = torch.randn(32, 16), torch.randn(32, 16)
    loss = SelfClassifierLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = head(x1), head(x2)
        assert z1.dtype == torch.bfloat16
        got = loss([[z1, z2]])
    assert got.dtype == torch.float32
    # Same bf16 logits, computed in fp32 outside autocast: must agree to fp32 precision
    # (a bf16 computation would be off by ~1e-2).
    exact = loss([[z1.float(), z2.float()]])
    assert got.item() == pytest.approx(exact.item(), rel=1e-5)
    # And close to the all-fp32 model (only logit rounding differs).
    fp32 = loss([[head(x1), head(x2)]])
    assert got.item() == pytest.approx(fp32.item(), rel=5e-2)
    got.backward()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()


def test_float32_stays_float32():
    outputs = random_outputs((5,), n=8, n_views=2, seed=8, dtype=torch.float32)
    got = SelfClassifierLoss()(outputs)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(slow_loss(outputs, PAIRS_2), rel=1e-4)


@pytest.mark.parametrize(
    "outputs, match",
    [
        ([], "no outputs"),
        ([[torch.randn(4, 3)]], "at least 2 views"),
        ([[torch.randn(4, 3), torch.randn(4, 5)]], "same"),
        ([[torch.randn(4, 3), torch.randn(5, 3)]], "same"),
        ([[torch.randn(4), torch.randn(4)]], "2-D"),
        ([[torch.randn(2, 4, 3), torch.randn(2, 4, 3)]], "2-D"),
        ([torch.randn(4, 3)], "list of per-view logits"),
    ],
)
def test_bad_inputs(outputs, match):
    with pytest.raises(ValueError, match=match):
        SelfClassifierLoss()(outputs)


@pytest.mark.parametrize("kw", [dict(row_tau=0.0), dict(col_tau=-0.1), dict(row_tau=float("nan"))])
def test_bad_temperatures(kw):
    with pytest.raises(ValueError, match="positive temperature"):
        SelfClassifierLoss(**kw)


def test_clusters_used():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 2.0], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert clusters_used(logits) == 2
    g = torch.Generator().manual_seed(9)
    z = torch.randn(50, 7, generator=g)
    assert clusters_used(z) == len({int(row.argmax()) for row in z})
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        clusters_used(torch.randn(5))


def test_alone_the_heads_are_neither_gathered_nor_copied():
    from sclib.core.loss import _gather_heads

    outputs = random_outputs([3, 5], n=4, n_views=2, dtype=torch.float32)
    gathered = _gather_heads(outputs)
    assert all(g is x for views, got in zip(outputs, gathered) for x, g in zip(views, got))
    half = [[x.detach().to(torch.bfloat16) for x in views] for views in outputs]
    assert all(g.dtype == torch.float32 for got in _gather_heads(half) for g in got)
