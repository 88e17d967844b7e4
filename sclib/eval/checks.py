"""Checks on feature rows and on what an evaluation produced; numpy only, so that what reads
results (notebooks 03-05, summaries) uses them without loading the model code.

- ``l2_normalise`` and ``spread_problem``: rows prepared for k-means and t-SNE/UMAP, and why they
  cannot go there (scikit-learn's t-SNE segfaults on rows that are all equal);
- ``collapse_warning`` and ``evaluation_warnings``: what a head's metrics or an eval.json say went
  wrong (a collapsed head, a skipped baseline), written by training and evaluation, read by reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sclib.run.records import BASELINES, Evaluation

# A scored head using fewer than this fraction of the clusters it could use has collapsed.
COLLAPSE_FRACTION = 0.5

def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spread_problem(x: np.ndarray, needed: int, step: str) -> str | None:
    """Why the rows of ``x`` [N, D] cannot go to ``step``, which needs ``needed`` distinct rows; None if they can.

    Checked before any library sees the rows: scikit-learn's t-SNE kills the process (segfault)
    on rows that are all equal, and k-means cannot make more clusters than distinct points.
    Non-finite rows are refused for the same reason.
    """
    n = len(x)
    bad = int((~np.isfinite(x)).any(axis=1).sum()) if x.size else 0
    if bad:
        return f"{step} skipped: {bad} of {n} feature rows are not finite"
    if n < needed:
        return f"{step} skipped: it needs at least {needed} samples, the split has {n}"
    distinct = len(np.unique(x.reshape(n, -1), axis=0))
    if distinct < needed:
        return (f"{step} skipped: it needs at least {needed} distinct rows, the {n} rows hold {distinct} "
                "(the features have no spread)")
    return None


def collapse_warning(metrics: dict[str, Any], eval_images: int) -> str | None:
    """A warning when the scored head uses far fewer clusters than it could: a collapse, else None.

    The head could use ``min(head_size, eval_images)`` clusters; using fewer than half of them
    means the optimiser drove most images into a few classes (the loss alone does not prevent
    that, e.g. with a far too high learning rate), and its ACC is no clustering result.
    """
    possible = min(int(metrics["head_size"]), eval_images)
    used = int(metrics["clusters_used"])
    if used >= COLLAPSE_FRACTION * possible:
        return None
    return (f"collapse: the scored head puts the {eval_images} eval images into {used} of its "
            f"{metrics['head_size']} clusters (a collapse, or a run too short to spread them); "
            "check the training curves, and lower --lr if clusters_used fell")


def evaluation_warnings(evaluation: Evaluation) -> list[str]:
    """What an evaluation says went wrong or was skipped: collapse, skipped baselines."""
    scored = evaluation.scored
    found = [collapse_warning(scored, int(evaluation.eval_images or scored["head_size"]))]
    found += [getattr(evaluation, key).get("skipped") for key, _ in BASELINES]
    return [w for w in found if w]
