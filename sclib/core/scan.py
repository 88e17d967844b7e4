"""The second stage's pure parts (SCAN, Van Gansbeke et al., ECCV 2020): neighbours, the neighbour
consistency loss, and the confident-sample selection of self-labelling.

SCAN mines each image's k nearest neighbours in a pre-trained feature space, then trains a
clustering head so that an image and its neighbours get the same confident prediction, with an
entropy term on the mean prediction that keeps every cluster in use (``wvangansbeke/
Unsupervised-Classification``, ``losses/losses.py``: ``SCANLoss``; CIFAR-10 entropy weight 5).
Self-labelling then fine-tunes on the images whose prediction is confident (softmax >= 0.99),
their predicted class as the label, weighting classes inversely to their count.

Nothing here knows a model or a data set: tensors in, tensors out (``sclib.eval.refine`` wires them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["balanced_weights", "confident", "mine_neighbours", "neighbour_consistency_loss"]


def mine_neighbours(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Indices [N, k] of each row's ``k`` nearest other rows by cosine similarity (itself excluded).

    ``features`` [N, D]. Exact (brute force in chunks of ``chunk`` rows, N x N similarities never
    held at once): 50,000 x 128 takes a few seconds on a CPU. Ties are broken by the lower index
    (a stable sort), so the result does not depend on the chunk size.
    """
    n = len(features)
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, {n - 1}] for {n} samples, got {k}")
    x = F.normalize(features.float(), dim=1)
    out = torch.empty(n, k, dtype=torch.long)
    for start in range(0, n, chunk):
        sim = x[start:start + chunk] @ x.T
        rows = torch.arange(start, min(start + chunk, n))
        sim[rows - start, rows] = -float("inf")  # never one's own neighbour
        out[start:start + chunk] = sim.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return out


def neighbour_consistency_loss(anchor_logits: torch.Tensor, neighbour_logits: torch.Tensor,
                               entropy_weight: float = 5.0) -> tuple[torch.Tensor, dict[str, float]]:
    """SCAN's loss for one head: consistency - entropy_weight * entropy of the mean prediction.

    ``anchor_logits``, ``neighbour_logits`` [B, C], already divided by the temperature. With
    p = softmax(anchor), q = softmax(neighbour):
        consistency = -mean_i log <p_i, q_i>
        entropy     = -sum_c pbar_c log pbar_c, pbar = mean_i p_i
    Minimising the first makes an image and its neighbour agree confidently; maximising the
    second spreads the batch over the classes (a collapse to one class has entropy 0). Returns the
    loss and its two parts (floats, for the history).
    """
    p = anchor_logits.softmax(dim=1)
    q = neighbour_logits.softmax(dim=1)
    agreement = (p * q).sum(dim=1).clamp_min(1e-8)
    consistency = -agreement.log().mean()
    mean = p.mean(dim=0).clamp_min(1e-8)
    entropy = -(mean * mean.log()).sum()
    loss = consistency - entropy_weight * entropy
    return loss, {"consistency": float(consistency.detach()), "entropy": float(entropy.detach())}


def confident(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the rows whose top probability is at least ``threshold``, and their argmax class.

    ``probs`` [N, C] (softmax outputs). SCAN's self-labelling uses 0.99.
    """
    top, label = probs.max(dim=1)
    keep = torch.nonzero(top >= threshold).flatten()
    return keep, label[keep]


def balanced_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Per-class cross-entropy weights [C] inversely proportional to each class's count in
    ``labels``, scaled so that they average 1 over the samples; absent classes weigh 0.

    So every class present contributes equally to the loss however few confident samples it has
    (SCAN's class-balanced cross-entropy), and the loss keeps the scale of the unweighted one.
    """
    counts = torch.bincount(labels, minlength=classes).float()
    weights = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    return weights * len(labels) / int((counts > 0).sum())
