"""Clustering evaluation of a run: every head, plus k-means baselines on features and pixels."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans

from sclib.augment import AugmentConfig, eval_transform
from sclib.files import write_json
from sclib.metrics import cluster_metrics


@dataclass
class Predictions:
    """What a model says about a split: backbone features and each head's logits."""

    features: np.ndarray            # [N, D] float32
    logits: list[np.ndarray]        # per head, [N, C_h] float32

    def assignments(self, head: int) -> np.ndarray:
        return self.logits[head].argmax(axis=1)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, aug: AugmentConfig, device: str | torch.device = "cpu",
            batch_size: int = 1024, amp: bool = False) -> Predictions:
    """Run the model in eval mode over uint8 images, in batches, on ``device``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    feats, logits = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else contextlib.nullcontext()
    for start in range(0, len(images), batch_size):
        x = eval_transform(images[start:start + batch_size].to(device), aug)
        with autocast:
            f = model.features(x)
            z = torch.nn.functional.normalize(model.projector(f), dim=1)
            out = model.classify(z)
        feats.append(f.float().cpu())
        logits.append([o.float().cpu() for o in out])
    model.train(was_training)
    heads = len(logits[0]) if logits else 0
    return Predictions(
        features=torch.cat(feats).numpy() if feats else np.zeros((0, 0), np.float32),
        logits=[torch.cat([batch[h] for batch in logits]).numpy() for h in range(heads)],
    )


def head_metrics(preds: Predictions, labels: np.ndarray, head: int) -> dict[str, float]:
    """The study's headline numbers: NMI/AMI/ARI/ACC of one head plus how many clusters it uses."""
    assigned = preds.assignments(head)
    metrics = cluster_metrics(labels, assigned)
    metrics["clusters_used"] = int(np.unique(assigned).size)
    metrics["head"] = head
    metrics["head_size"] = int(preds.logits[head].shape[1])
    return metrics


def kmeans_metrics(x: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> dict[str, float]:
    """k-means with k = number of classes: the bar a clustering method has to clear."""
    assigned = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x.astype(np.float64))
    return cluster_metrics(labels, assigned)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluation_report(preds: Predictions, labels: np.ndarray, images: torch.Tensor, num_classes: int,
                      seed: int = 0) -> dict[str, Any]:
    """Every head's metrics and the two k-means baselines, as written to ``eval.json``."""
    pixels = images.reshape(len(images), -1).float().numpy() / 255.0
    return {
        "heads": [head_metrics(preds, labels, h) for h in range(len(preds.logits))],
        "kmeans_features": kmeans_metrics(l2_normalise(preds.features), labels, num_classes, seed),
        "kmeans_pixels": kmeans_metrics(pixels, labels, num_classes, seed),
    }


def evaluate_run(run_dir: str | Path, checkpoint_path: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Evaluate a run folder's model on its eval split and write ``eval.json``."""
    from sclib.runs import augment_config, load_data, load_model, open_run, resolve_device

    cfg, paths = open_run(run_dir)
    data = load_data(cfg)
    dev = resolve_device(device)
    model, epoch = load_model(run_dir, data.info, checkpoint_path, dev)
    preds = predict(model, data.eval_images, augment_config(cfg, data.info), dev, amp=cfg.amp)
    labels = data.eval_labels.numpy()
    report = {
        "epoch": epoch,
        "evaluated_head": cfg.evaluated_head(len(data.info.classes)),
        **evaluation_report(preds, labels, data.eval_images, len(data.info.classes), cfg.seed),
    }
    write_json(paths.eval, report)
    return report
