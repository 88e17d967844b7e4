"""Clustering and classification metrics for unsupervised image classification.

Cluster ids are arbitrary, so accuracy needs a one-to-one matching of clusters to
classes (Hungarian algorithm on the contingency matrix) before it means anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

__all__ = [
    "cluster_metrics",
    "cluster_purity",
    "confusion_after_matching",
    "hungarian_match",
    "topk_accuracy",
]


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(x, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: metrics need at least one sample")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            raise ValueError(
                f"{name} has float dtype {arr.dtype}; pass integer labels (e.g. .astype(int) / .long())"
            )
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"{name} has negative labels; labels must be non-negative integers")
    return arr.astype(np.int64)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return t, p


def _contingency(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts[cluster, class] over the cluster and class ids actually present."""
    counts = skm.cluster.contingency_matrix(t, p).T  # scikit-learn's is [class, cluster]
    return counts, np.unique(p), np.unique(t)


def _match(t: np.ndarray, p: np.ndarray) -> tuple[dict[int, int], int]:
    counts, clusters, classes = _contingency(t, p)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}
    return mapping, int(counts[rows, cols].sum())


def hungarian_match(y_true, y_pred) -> dict[int, int]:
    """One-to-one map cluster id -> class id that maximises the number of matches.

    With more clusters than classes, only as many clusters as there are classes
    get a class; the rest are absent from the map (their samples count as wrong).
    """
    t, p = _pair(y_true, y_pred)
    return _match(t, p)[0]


def cluster_metrics(y_true, y_pred) -> dict[str, float]:
    """NMI, AMI, ARI (scikit-learn) and Hungarian ACC, as fractions.

    ACC is the standard one-to-one clustering accuracy: each cluster gets at most
    one class and vice versa. When there are more clusters than classes, the
    unmatched clusters count as wrong (no many-to-one majority vote), so
    over-clustering is not rewarded. ARI can be slightly negative for worse than
    chance clusterings (it is reported as sklearn computes it).
    """
    t, p = _pair(y_true, y_pred)
    _, matched = _match(t, p)
    return {
        "nmi": float(skm.normalized_mutual_info_score(t, p)),
        "ami": float(skm.adjusted_mutual_info_score(t, p)),
        "ari": float(skm.adjusted_rand_score(t, p)),
        "acc": matched / t.size,
    }


def topk_accuracy(logits_or_scores, y_true, ks: Sequence[int] = (1, 3)) -> dict[str, float]:
    """Fraction of samples whose true class is among the k highest scores.

    Used for supervised heads/probes where class ids already mean something. With three or more
    classes this is scikit-learn's ``top_k_accuracy_score`` (ties ranked as it ranks them).
    """
    scores = logits_or_scores
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(np.asarray(scores))
    scores = scores.detach().cpu()
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [N, C], got shape {tuple(scores.shape)}")
    t = _labels(y_true, "y_true")
    if scores.shape[0] != t.size:
        raise ValueError(f"scores has {scores.shape[0]} rows but y_true has {t.size} labels")
    n_classes = scores.shape[1]
    if t.max() >= n_classes:
        raise ValueError(f"y_true has label {t.max()} but scores only has {n_classes} classes")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    if n_classes > 2:  # scikit-learn's binary form wants 1-D scores; keep one code path for 3+ classes
        return {f"top{k}": 1.0 if k >= n_classes else float(skm.top_k_accuracy_score(
            t, scores.double().numpy(), k=k, labels=np.arange(n_classes))) for k in ks}
    top = scores.float().topk(min(max(ks), n_classes), dim=1).indices
    hit = top == torch.from_numpy(t)[:, None]
    return {f"top{k}": float(hit[:, :k].any(dim=1).float().mean()) for k in ks}


def confusion_after_matching(y_true, y_pred) -> np.ndarray:
    """Confusion matrix [true class, matched class] after Hungarian matching.

    Rows and columns are indexed by class id 0..max label. Samples of clusters
    left unmatched (more clusters than classes) are not in any column, so each
    row sums to the number of that class's samples in matched clusters.
    """
    t, p = _pair(y_true, y_pred)
    mapping, _ = _match(t, p)
    n = int(t.max()) + 1
    if mapping:
        n = max(n, max(mapping.values()) + 1)
    conf = np.zeros((n, n), dtype=np.int64)
    for true, cluster in zip(t, p):
        if int(cluster) in mapping:
            conf[true, mapping[int(cluster)]] += 1
    return conf


def cluster_purity(y_true, y_pred) -> dict[int, float]:
    """Per cluster: fraction of its samples carrying its matched class.

    Clusters with no Hungarian match (more clusters than classes) use their
    majority class instead, so every cluster in an image grid gets a score.
    """
    t, p = _pair(y_true, y_pred)
    mapping, _ = _match(t, p)
    counts, clusters, classes = _contingency(t, p)
    col = {int(c): k for k, c in enumerate(classes)}
    purity = {}
    for r, cluster in enumerate(clusters):
        cid = int(cluster)
        hits = counts[r, col[mapping[cid]]] if cid in mapping else counts[r].max()
        purity[cid] = float(hits / counts[r].sum())
    return purity
