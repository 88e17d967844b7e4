"""Clustering evaluation of a run: every head, k-means baselines, and the arrays the reports draw.

``evaluate`` is the last step that needs the model. It writes ``eval.json`` (the numbers),
``arrays.json`` + ``samples.png`` (every head's assignments, the labels and a few images per
cluster: small, plain formats, committed with a study) and ``eval_features.npz`` (the eval split's
features in float16, what notebook 04's 2-D embeddings are made from: too large to commit, and ignored by git). So
notebooks 03-05 render from files: a run trained on a GPU machine can be copied home without
checkpoints or data set and reported on a CPU, and a committed study re-renders from a clone
(notebook 04 then reads the embeddings it drew, ``embeddings.json``, instead of the features).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans

from sclib import seed_report
from sclib.core.metrics import cluster_metrics
from sclib.eval.checks import evaluation_warnings, l2_normalise, spread_problem
from sclib.eval.features import Predictions, checkpoint_predictions
from sclib.run import exports, records
from sclib.run.build import augment_config, load_data, resolve_device
from sclib.run.config import Config
from sclib.run.files import write_bytes, write_json
from sclib.run.paths import RunPaths, open_run, run_folders
from sclib.run.records import BASELINES, Evaluation

# Images kept per cluster of the scored head, for the cluster grids of notebook 05 (it shows 10):
# they are most of what a study commits (CIFAR-20: 20 clusters x 10 x 3 KB a seed).
IMAGES_PER_CLUSTER = 10
# k-means on raw pixels (CIFAR: 10,000 x 3,072) was most of notebook 03's time at scikit-learn's
# float64 and 10 starts. In float32 with 3 starts it takes a fraction of that and its ACC moves by
# less than the seeds' spread (benchmarks/analysis.py prints both; benchmarks/README.md, "analysis").
KMEANS_PIXELS = {"n_init": 3, "dtype": np.float32}


class EvaluationError(ValueError):
    """A model whose outputs cannot be evaluated (not finite); the message says why and what to do."""


def head_metrics(preds: Predictions, labels: np.ndarray, head: int) -> dict[str, float]:
    """The study's headline numbers: NMI/AMI/ARI/ACC of one head plus how many clusters it uses."""
    assigned = preds.assignments(head)
    metrics = cluster_metrics(labels, assigned)
    metrics["clusters_used"] = int(np.unique(assigned).size)
    metrics["head"] = head
    metrics["head_size"] = int(preds.logits[head].shape[1])
    return metrics


def kmeans_metrics(x: np.ndarray, labels: np.ndarray, k: int, seed: int = 0, step: str = "k-means",
                   n_init: int = 10, dtype: type = np.float64) -> dict[str, Any]:
    """k-means with k = number of classes: the bar a clustering method has to clear.

    ``x`` [N, D] is clustered in ``dtype`` with the best of ``n_init`` k-means++ starts
    (scikit-learn). With fewer than ``k`` distinct samples (a tiny eval split, features without
    spread) the metrics are None and ``skipped`` says why, so the rest of the evaluation still
    gets written.
    """
    problem = spread_problem(x, k, f"{step} (k={k})")
    if problem:
        return {**dict.fromkeys(seed_report.METRICS), "skipped": problem}
    assigned = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x.astype(dtype))
    return cluster_metrics(labels, assigned)


def every_head_and_baseline(preds: Predictions, labels: np.ndarray, images: torch.Tensor, num_classes: int,
                      seed: int = 0) -> dict[str, Any]:
    """Every head's metrics and the two k-means baselines, as written to ``eval.json``."""
    pixels = images.reshape(len(images), -1).float().numpy() / 255.0
    return {
        "heads": [head_metrics(preds, labels, h) for h in range(len(preds.logits))],
        "kmeans_features": kmeans_metrics(l2_normalise(preds.features), labels, num_classes, seed,
                                          "k-means on backbone features"),
        "kmeans_pixels": kmeans_metrics(pixels, labels, num_classes, seed, "k-means on pixels", **KMEANS_PIXELS),
    }


def check_finite(preds: Predictions, run: str | Path) -> None:
    """Refuse a model whose features or logits are not finite: nothing drawn from them would mean anything."""
    for name, arrays in (("features", [preds.features]), ("logits", preds.logits)):
        bad = sum(int((~np.isfinite(a)).any(axis=1).sum()) for a in arrays)
        if bad:
            raise EvaluationError(f"the model of run {run} gives non-finite {name} for {bad} eval images; "
                                  "it diverged: pre-train it again with a lower --lr")


def cluster_samples(assigned: np.ndarray, per_cluster: int = IMAGES_PER_CLUSTER, seed: int = 0) -> np.ndarray:
    """Sorted indices of up to ``per_cluster`` random members of every cluster."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(members, size=min(per_cluster, members.size), replace=False)
             for members in (np.flatnonzero(assigned == c) for c in np.unique(assigned))]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def export_arrays(paths: RunPaths, preds: Predictions, labels: np.ndarray, images: torch.Tensor,
                  head: int, seed: int = 0) -> Path:
    """``arrays.json`` + ``samples.png`` (sclib.run.exports): every head's assignments [H, N], the
    labels [N] and :data:`IMAGES_PER_CLUSTER` eval images of each cluster of the scored head.

    About 0.3 MB a CIFAR-10 seed, in plain formats, so a study commits them.
    """
    assigned = np.stack([preds.assignments(h) for h in range(len(preds.logits))])
    sample = cluster_samples(assigned[head], seed=seed)
    return exports.write_arrays(paths.arrays, paths.samples, labels, assigned, [p.shape[1] for p in preds.logits],
                                sample, images[torch.from_numpy(sample)].numpy())


def export_features(path: str | Path, features: np.ndarray) -> Path:
    """``eval_features.npz``: the eval split's features [N, D] in float16.

    Float16 halves them (ample for t-SNE and UMAP); a CIFAR-10 seed of width 256 is about 5 MB.
    Features beyond float16's range (65504, e.g. after a far too high learning rate) are kept in
    float32 instead of turning into inf.
    """
    fits = np.abs(features).max(initial=0.0) <= np.finfo(np.float16).max
    return _write_npz(path, features=features.astype(np.float16 if fits else np.float32))


def _write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def evaluate_run(
    run_dir: str | Path, checkpoint_path: str | Path | None = None, device: str = "auto"
) -> Evaluation:
    """Evaluate a run folder's model on its eval split; write eval.json, arrays.json + samples.png and
    eval_features.npz.

    The embeddings notebook 04 drew from the previous features are deleted: they are stale.
    """
    cfg, paths = open_run(run_dir)
    data = load_data(cfg)
    preds, epoch = checkpoint_predictions(cfg, paths, data.info, augment_config(cfg, data.info), "eval",
                                          data.eval_images, checkpoint_path, resolve_device(device))
    check_finite(preds, run_dir)
    labels = data.eval_labels.numpy()
    classes = len(data.info.classes)
    head = cfg.scored_head(classes)
    record = {
        "epoch": epoch,
        "evaluated_head": head,
        "head_warning": cfg.head_warning(classes),
        "split": "validation" if cfg.val_fraction else "test",
        "classes": list(data.info.classes),
        "eval_images": len(labels),
        **every_head_and_baseline(preds, labels, data.eval_images, classes, cfg.seed),
    }
    record["warnings"] = evaluation_warnings(Evaluation.from_json(record, cfg.seed))
    paths.embeddings.unlink(missing_ok=True)
    export_features(paths.eval_features, preds.features)
    paths.legacy_arrays.unlink(missing_ok=True)
    export_arrays(paths, preds, labels, data.eval_images, head, cfg.seed)
    write_json(paths.eval, record)
    return Evaluation.from_json(record, cfg.seed)


def evaluate_runs(
    path: str | Path, checkpoint_path: str | Path | None = None, device: str = "auto"
) -> list[dict[str, Any]]:
    """Evaluate a run or every seed run of a group; rows for a short table."""
    rows = []
    for run in run_folders(path):
        evaluation = evaluate_run(run, checkpoint_path, device)
        for warning in evaluation.warnings:
            print(f"warning: {run}: {warning}", file=sys.stderr)
        scored = evaluation.scored
        rows.append({"run": str(run), "epoch": evaluation.epoch, "what": f"head {scored['head_size']}", **scored})
        for name, _ in BASELINES:
            rows.append({"run": str(run), "epoch": evaluation.epoch, "what": name.replace("_", " on "),
                         **getattr(evaluation, name)})
    return rows


def ensure_evaluated(cfg: Config, paths: RunPaths, device: str = "auto") -> Evaluation:
    """The run's eval.json, evaluating first if it or arrays.json is missing or stale."""
    if paths.eval.exists() and paths.arrays.exists():
        evaluation = records.read_evaluation(paths, cfg.seed)
        if evaluation.epoch == cfg.epochs:
            return evaluation
    return evaluate_run(paths.root, device=device)
