"""A checkpoint's outputs on a split: computed once, at the hardware's speed, cached in the run folder.

The linear probe, the kNN probe and the evaluation all start from the same thing: the frozen
model's backbone features (and, for evaluation, every head's logits) on a split. ``predict``
computes them in eval mode under the run's own precision (bf16 autocast + channels-last where the
run trained so, fp32 out), into preallocated arrays. ``checkpoint_predictions`` keeps them in
``<run>/features/`` so that notebook 03 reads what notebook 02 computed for the final checkpoint.

A cache file is used only when its key matches: the digest of the checkpoint's *weights* (so
``last.pt`` and the last milestone, holding the same weights, share one file, and a retrained
checkpoint is never mistaken for the old one), the digest of the split's images, the evaluation
transform (image size, mean, std), the precision, and the format version. Anything else is
recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sclib.core.augment import AugmentConfig, eval_transform
from sclib.data import DatasetInfo
from sclib.run import checkpoint
from sclib.run.build import model_from_state, precision, run_state
from sclib.run.config import Config
from sclib.run.files import write_bytes
from sclib.run.paths import RunPaths

# Bumped when what a cache file holds, or how it is computed, changes.
FORMAT = 1
# Images per forward batch: large enough for the convolutions to fill the cores, small enough
# for a ResNet-18's activations at 96 px (STL-10) to stay within a few GB.
BATCH_SIZE = 1024


@dataclass
class Predictions:
    """What a model says about a split: backbone features and each head's logits."""

    features: np.ndarray            # [N, D] float32
    logits: list[np.ndarray]        # per head, [N, C_h] float32 (empty when only features were asked)

    def assignments(self, head: int) -> np.ndarray:
        return self.logits[head].argmax(axis=1)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, aug: AugmentConfig, device: str | torch.device = "cpu",
            batch_size: int = BATCH_SIZE, amp: bool = False, heads: bool = True) -> Predictions:
    """The model in eval mode over uint8 images [N, C, H, W], in batches, on ``device``.

    ``amp`` selects the run's precision (``runs.precision``): on a CPU with native bf16 (or CUDA)
    bf16 autocast and channels-last, for which the model is put in channels-last memory format
    (as training does); elsewhere fp32. Features and logits come out as fp32 either way.
    ``heads=False`` skips the projector and heads (the probes read features only).

    Measured on the width-16 small CNN, 32 px, 2 threads of this project's CPU (AMX): bf16 +
    channels-last 2.4x the fp32 contiguous pass (benchmarks/analysis.py prints both).
    """
    device = torch.device(device)
    how = precision(device, amp)
    was_training = model.training
    model.eval()
    if how.channels_last:
        model.to(memory_format=torch.channels_last)
    n = len(images)
    features: torch.Tensor | None = None
    logits: list[torch.Tensor] = []
    for start in range(0, n, batch_size):
        x = eval_transform(images[start:start + batch_size].to(device), aug)
        if how.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with how.autocast(device):
            f, z = model.encode(x) if heads else (model.features(x), None)
            out = model.classify(z) if heads else []
        if features is None:  # preallocated once the widths are known: no per-batch lists to concatenate
            features = torch.empty(n, f.shape[1])
            logits = [torch.empty(n, o.shape[1]) for o in out]
        stop = start + len(x)
        features[start:stop] = f.float()
        for target, o in zip(logits, out):
            target[start:stop] = o.float()
    model.train(was_training)
    if features is None:
        return Predictions(np.zeros((0, 0), np.float32), [])
    return Predictions(features.numpy(), [t.numpy() for t in logits])


def images_digest(images: torch.Tensor) -> str:
    """sha256 of a uint8 image tensor's shape and bytes (about 0.2 s for CIFAR's 50,000 images)."""
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(images.contiguous().view(-1).numpy())
    return digest.hexdigest()


def cache_key(weights: str, images: str, aug: AugmentConfig, numerics: str, heads: bool) -> dict[str, Any]:
    """What a cache file must match to be used (see the module docstring)."""
    return {"format": FORMAT, "weights": weights, "images": images, "image_size": aug.image_size,
            "mean": list(aug.mean), "std": list(aug.std), "precision": numerics, "heads": heads}


def cache_path(paths: RunPaths, split: str, weights: str, heads: bool) -> Path:
    return paths.root / "features" / f"{split}-{weights[:16]}{'' if heads else '-backbone'}.npz"


def read_cache(path: Path, key: dict[str, Any]) -> Predictions | None:
    """The cached predictions at ``path`` if its key equals ``key``; None if absent, stale or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path) as cached:
            if json.loads(str(cached["key"])) != key:
                return None
            heads = int(cached["heads"])
            return Predictions(cached["features"], [cached[f"logits{h}"] for h in range(heads)])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a damaged or foreign file is recomputed
        return None


def write_cache(path: Path, key: dict[str, Any], preds: Predictions) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, key=json.dumps(key), features=preds.features, heads=len(preds.logits),
             **{f"logits{h}": logits for h, logits in enumerate(preds.logits)})
    return write_bytes(path, buffer.getvalue())


def checkpoint_predictions(cfg: Config, paths: RunPaths, info: DatasetInfo, aug: AugmentConfig, split: str,
                           images: torch.Tensor, checkpoint_path: str | Path | None = None,
                           device: str | torch.device = "cpu", heads: bool = True,
                           ) -> tuple[Predictions, int]:
    """A checkpoint's predictions on ``images`` (the split named ``split``) and its epoch, from the
    run's cache when the key matches, else computed by ``predict`` and cached.

    ``checkpoint_path`` None: the run's newest intact checkpoint (as ``runs.load_model``).
    Raises ``checkpoint.CheckpointError`` for a missing, damaged or misfitting checkpoint.
    """
    device = torch.device(device)
    state = run_state(paths, checkpoint_path)
    weights = checkpoint.weights_digest(state["model"])
    key = cache_key(weights, images_digest(images), aug, str(precision(device, cfg.amp)), heads)
    path = cache_path(paths, split, weights, heads)
    cached = read_cache(path, key)
    if cached is None:
        model = model_from_state(cfg, info, state, device, checkpoint_path or state.get("path", paths.last), paths)
        cached = predict(model, images, aug, device, amp=cfg.amp, heads=heads)
        write_cache(path, key, cached)
    return cached, int(state["epoch"])
