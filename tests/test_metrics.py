"""Metrics against brute force and scikit-learn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from sclib.core.metrics import (
    cluster_metrics,
    cluster_purity,
    confusion_after_matching,
    hungarian_match,
    topk_accuracy,
)


def brute_force_acc(y_true, y_pred) -> float:
    """Best one-to-one cluster->class map by trying every injective assignment."""
    clusters = sorted(set(y_pred.tolist()))
    classes = sorted(set(y_true.tolist()))
    best = 0
    if len(clusters) <= len(classes):
        maps = (dict(zip(clusters, perm)) for perm in itertools.permutations(classes, len(clusters)))
    else:  # more clusters than classes: choose which clusters get the classes
        maps = (dict(zip(perm, classes)) for perm in itertools.permutations(clusters, len(classes)))
    for m in maps:
        hits = sum(1 for t, p in zip(y_true.tolist(), y_pred.tolist()) if m.get(p) == t)
        best = max(best, hits)
    return best / len(y_true)


CASES = [(3, 3), (4, 4), (3, 5), (5, 3), (2, 4), (4, 2)]  # (n_classes, n_clusters)


@pytest.mark.parametrize("n_classes, n_clusters", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_acc_equals_brute_force(n_classes, n_clusters, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, size=30)
    # Correlated with the truth so the best map is not trivial.
    y_pred = np.where(rng.random(30) < 0.6, (y_true * 7 + 1) % n_clusters, rng.integers(0, n_clusters, 30))
    got = cluster_metrics(y_true, y_pred)["acc"]
    assert got == pytest.approx(brute_force_acc(y_true, y_pred), abs=1e-12)


@pytest.mark.parametrize("n_classes, n_clusters", CASES)
def test_hungarian_match_is_injective_and_optimal(n_classes, n_clusters):
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, n_classes, size=40)
    y_pred = rng.integers(0, n_clusters, size=40)
    m = hungarian_match(y_true, y_pred)
    assert len(set(m.values())) == len(m) == min(len(set(y_true)), len(set(y_pred)))
    assert set(m) <= set(y_pred.tolist()) and set(m.values()) <= set(y_true.tolist())
    hits = sum(1 for t, p in zip(y_true, y_pred) if m.get(int(p)) == t)
    assert hits / len(y_true) == pytest.approx(brute_force_acc(y_true, y_pred))


def test_nmi_ami_ari_equal_sklearn():
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 5, size=200)
    y_pred = np.where(rng.random(200) < 0.5, y_true, rng.integers(0, 7, 200))
    got = cluster_metrics(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    assert set(got) == {"nmi", "ami", "ari", "acc"}
    assert got["nmi"] == pytest.approx(skm.normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"))
    assert got["ami"] == pytest.approx(skm.adjusted_mutual_info_score(y_true, y_pred))
    assert got["ari"] == pytest.approx(skm.adjusted_rand_score(y_true, y_pred))
    assert all(isinstance(v, float) for v in got.values())
    assert 0.0 <= got["acc"] <= 1.0 and 0.0 <= got["nmi"] <= 1.0


def test_perfect_clustering_and_relabelling_invariance():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 6, size=100)
    perm = rng.permutation(6)
    relabelled = perm[y_true] + 10  # arbitrary cluster ids
    perfect = cluster_metrics(y_true, relabelled)
    for k in ("nmi", "ami", "ari", "acc"):
        assert perfect[k] == pytest.approx(1.0)
    noisy = np.where(rng.random(100) < 0.7, y_true, rng.integers(0, 6, 100))
    base = cluster_metrics(y_true, noisy)
    shuffled = cluster_metrics(y_true, perm[noisy])
    for k in base:
        assert shuffled[k] == pytest.approx(base[k])
    assert base["acc"] < 1.0


def test_extra_clusters_count_as_wrong():
    # Class 0 split evenly into clusters 0 and 1: one-to-one ACC can only credit one of them.
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    assert cluster_metrics(y_true, y_pred)["acc"] == pytest.approx(6 / 8)


def test_topk_against_loop():
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(50, 6))
    y_true = rng.integers(0, 6, size=50)
    got = topk_accuracy(torch.from_numpy(scores), y_true, ks=(1, 2, 3, 6))
    for k in (1, 2, 3, 6):
        hits = 0
        for row, t in zip(scores, y_true):
            ranked = sorted(range(6), key=lambda c: -row[c])
            hits += int(t in ranked[:k])
        assert got[f"top{k}"] == pytest.approx(hits / 50)
    assert got["top6"] == pytest.approx(1.0)
    assert set(topk_accuracy(scores, y_true)) == {"top1", "top3"}


def test_confusion_after_matching():
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 4, size=60)
    y_pred = np.where(rng.random(60) < 0.6, (y_true + 2) % 4, rng.integers(0, 4, 60))
    conf = confusion_after_matching(y_true, y_pred)
    m = hungarian_match(y_true, y_pred)
    expected = np.zeros((4, 4), dtype=int)
    for t, p in zip(y_true, y_pred):
        expected[t, m[int(p)]] += 1
    np.testing.assert_array_equal(conf, expected)
    assert np.trace(conf) / len(y_true) == pytest.approx(cluster_metrics(y_true, y_pred)["acc"])
    np.testing.assert_array_equal(conf.sum(axis=1), np.bincount(y_true, minlength=4))


def test_cluster_purity():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 0, 0, 0])
    y_pred = np.array([5, 5, 5, 7, 7, 7, 7, 9, 9, 9])
    # Clusters 5 and 9 both lean to class 0; only one of them can be matched to it.
    pur = cluster_purity(y_true, y_pred)
    m = hungarian_match(y_true, y_pred)
    assert set(pur) == {5, 7, 9}
    for cluster, cls in m.items():
        members = y_true[y_pred == cluster]
        assert pur[cluster] == pytest.approx(np.mean(members == cls))
    # More clusters than classes: the unmatched cluster scores its majority class.
    y_true2 = np.array([0, 0, 0, 1, 1, 0, 0, 1])
    y_pred2 = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pur2 = cluster_purity(y_true2, y_pred2)
    assert 2 not in hungarian_match(y_true2, y_pred2)
    assert pur2 == pytest.approx({0: 1.0, 1: 1.0, 2: 2 / 3})


@pytest.mark.parametrize(
    "y_true, y_pred, match",
    [
        ([0, 1, 2], [0, 1], "differ in length"),
        ([], [], "empty"),
        ([0.5, 1.0], [0, 1], "integer"),
        ([0.0, 1.0], [0, 1], "integer"),
        (["a", "b"], [0, 1], "integer"),
        ([[0, 1]], [[0, 1]], "1-D"),
        ([0, -1], [0, 1], "negative"),
    ],
)
def test_bad_inputs(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        cluster_metrics(y_true, y_pred)


def test_topk_bad_inputs():
    with pytest.raises(ValueError, match="rows"):
        topk_accuracy(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError, match="classes"):
        topk_accuracy(np.zeros((2, 4)), [0, 4])
    with pytest.raises(ValueError, match="2-D"):
        topk_accuracy(np.zeros(4), [0, 1, 2, 3])
