"""The second stage's pure parts against independent references: neighbours against a brute-force
loop, SCAN's loss against its formula written out sample by sample, confident selection and class
balance on hand-built examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sclib.core.scan import balanced_weights, confident, mine_neighbours, neighbour_consistency_loss


def brute_force_neighbours(x: np.ndarray, k: int) -> list[list[int]]:
    """For every row, the k other rows of highest cosine, ties to the lower index: two plain loops."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = []
    for i in range(len(x)):
        scored = sorted((-float(unit[i] @ unit[j]), j) for j in range(len(x)) if j != i)
        out.append([j for _, j in scored[:k]])
    return out


@pytest.mark.parametrize("n, dim, k, chunk", [(50, 3, 5, 7), (64, 8, 1, 64), (33, 2, 32, 10)])
def test_neighbours_equal_brute_force(n, dim, k, chunk):
    x = np.random.default_rng(n).normal(size=(n, dim)).astype(np.float32)
    ours = mine_neighbours(torch.from_numpy(x), k, chunk=chunk)
    assert ours.tolist() == brute_force_neighbours(x, k)


def test_neighbours_never_include_the_image_itself_even_among_duplicates():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ours = mine_neighbours(x, 2)
    assert all(i not in row for i, row in enumerate(ours.tolist()))
    assert ours[0].tolist() == [1, 2] and ours[3].tolist() == [0, 1]  # equal similarity: lower index first


@pytest.mark.parametrize("k", [0, 4])
def test_neighbours_refuse_an_impossible_k(k):
    with pytest.raises(ValueError, match="k must lie in"):
        mine_neighbours(torch.randn(4, 3), k)


def slow_scan_loss(a: np.ndarray, b: np.ndarray, weight: float) -> float:
    """SCAN's loss, one sample and one class at a time."""
    def softmax(row):
        e = [math.exp(v - max(row)) for v in row]
        return [v / sum(e) for v in e]

    p = [softmax(list(r)) for r in a]
    q = [softmax(list(r)) for r in b]
    consistency = -sum(math.log(sum(pi * qi for pi, qi in zip(p[i], q[i]))) for i in range(len(p))) / len(p)
    mean = [sum(p[i][c] for i in range(len(p))) / len(p) for c in range(len(p[0]))]
    entropy = -sum(m * math.log(m) for m in mean)
    return consistency - weight * entropy


@pytest.mark.parametrize("batch, classes, weight", [(6, 3, 5.0), (1, 4, 1.0), (9, 10, 0.0)])
def test_consistency_loss_equals_the_slow_formula(batch, classes, weight):
    gen = torch.Generator().manual_seed(batch * classes)
    a, b = torch.randn(batch, classes, generator=gen) * 3, torch.randn(batch, classes, generator=gen) * 3
    loss, parts = neighbour_consistency_loss(a, b, weight)
    assert float(loss) == pytest.approx(slow_scan_loss(a.numpy(), b.numpy(), weight), rel=1e-5, abs=1e-6)
    assert float(loss) == pytest.approx(parts["consistency"] - weight * parts["entropy"], rel=1e-6, abs=1e-6)


def test_agreeing_confident_spread_predictions_score_lower_than_a_collapse():
    eye = torch.eye(4) * 20  # four images, each confidently in its own class, and its neighbour agrees
    spread, _ = neighbour_consistency_loss(eye, eye)
    collapsed, _ = neighbour_consistency_loss(eye[[0, 0, 0, 0]], eye[[0, 0, 0, 0]])
    disagreeing, _ = neighbour_consistency_loss(eye, eye[[1, 2, 3, 0]])
    assert spread < collapsed and spread < disagreeing


def test_confident_rows_on_a_hand_built_example():
    probs = torch.tensor([[0.995, 0.005, 0.0], [0.5, 0.5, 0.0], [0.0, 0.01, 0.99], [0.2, 0.79, 0.01]])
    keep, label = confident(probs, 0.99)
    assert keep.tolist() == [0, 2] and label.tolist() == [0, 2]
    keep, label = confident(probs, 0.75)
    assert keep.tolist() == [0, 2, 3] and label.tolist() == [0, 2, 1]
    assert confident(probs, 1.0)[0].numel() == 0


def test_balanced_weights_on_a_hand_built_example():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # class 3 absent
    w = balanced_weights(labels, 4)
    # each present class contributes equally: 3 * w0 == 1 * w1 == 2 * w2; samples average 1
    assert torch.allclose(w, torch.tensor([2 / 3, 2.0, 1.0, 0.0]))
    assert float(w[labels].mean()) == pytest.approx(1.0)
