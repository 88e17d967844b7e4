"""Linear and kNN probes on frozen backbone features (the seed's Fig. 2).

The backbone runs once per split in eval mode (batch norm frozen) and the probe trains on the
cached features: with no augmentation this is the same as training through a frozen network,
at a fraction of the cost, and it cannot touch the backbone's weights or statistics.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sclib.core.metrics import topk_accuracy
from sclib.core.optim import lr_at
from sclib.eval.features import checkpoint_predictions
from sclib.run import checkpoint, records
from sclib.run.build import augment_config, load_data, resolve_device
from sclib.run.config import Config
from sclib.run.files import write_csv, write_json
from sclib.run.paths import RunPaths, open_run, run_folders
from sclib.run.records import KNN_K

# Neighbours that vote in the kNN probe (DINO's 20).
# The seed's linear-probe protocol: 100 epochs (AdamW, batch 512, lr 4e-4 cosine). A probe of
# fewer epochs is checked for convergence (probe_checkpoint, convergence_warning): twice its
# epochs may add at most CONVERGED_WITHIN to its top-1 (a fraction; on digits 100 epochs give
# 98.33 %, 200 give 98.70 %), and at most STILL_AT_START of its predictions may be its random start's.
PROBE_EPOCHS = 100
PROBE_BATCH_SIZE = 512
PROBE_LR = 4e-4
CONVERGED_WITHIN = 0.01
STILL_AT_START = 0.9  # of the eval predictions; a converged probe shares about 1/C with its random start


class ProbeNotConverged(UserWarning):
    """A linear probe of fewer epochs than the protocol's that more epochs would still have improved."""

if TYPE_CHECKING:
    from sclib.data import DataSplits


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the enclosed torch ops on ``count`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cosine_lrs(total_steps: int, lr: float) -> list[float]:
    """The probe's schedule: cosine from ``lr`` to 0 over ``total_steps``, no warm-up, one value per step."""
    return [lr_at(step, total_steps, 0, lr, lr, 0.0) for step in range(total_steps)]


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
                 num_classes: int, epochs: int = PROBE_EPOCHS, batch_size: int = PROBE_BATCH_SIZE, lr: float = PROBE_LR,
                 seed: int = 0) -> dict[str, float]:
    """One linear layer, AdamW without weight decay, cosine decay per step (the seed's recipe).

    ``train_x`` [N, D], ``train_y`` [N] int, ``eval_x`` [M, D], ``eval_y`` [M]; returns top-1 and
    top-3 accuracy (fractions) on the eval split.

    Features are standardised with the training split's statistics first (as MoCo v3 and MAE
    do with a BatchNorm without affine before the probe). That is a fixed affine map, so the
    probe stays linear in the features; it only spares Adam the features' uneven scales, which
    on a small data set with few steps per epoch otherwise leave the probe far from converged.

    Made for speed, the protocol unchanged (CIFAR-10: 9,800 steps of a 1,290-weight layer):
    - one intra-op thread: each op is tiny, and on a loaded 2-core machine two threads made every
      step 5x slower than one (measured here: 6.3 s against 1.1 s for 10 epochs of CIFAR-10);
    - the schedule is computed once, each epoch's shuffled copy of the features is made in one
      gather and cut into contiguous batches, and AdamW takes its fused single-kernel step.
    The batches, their order and the initial weights are the straightforward loop's (one
    ``randperm`` per epoch from ``seed``); the fused step rounds differently from the for-loop
    one, so results agree to float precision, not bit for bit (tests/test_probe.py).
    """
    scores, _ = _fit_linear(train_x, train_y, eval_x, num_classes, epochs, batch_size, lr, seed)
    return topk_accuracy(scores.numpy(), eval_y.numpy(), ks=(1, 3))


def _fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, num_classes: int, epochs: int,
                batch_size: int, lr: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``linear_probe``'s training: the eval split's scores after it, and the same layer's at its random start."""
    if len(train_x) < 2 or len(eval_x) < 1:
        raise ValueError(f"a linear probe needs at least 2 training and 1 eval samples, got {len(train_x)} "
                         f"and {len(eval_x)}")
    with torch_threads(1):
        mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
        train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        layer = torch.nn.Linear(train_x.shape[1], num_classes)
        with torch.no_grad():  # draws no random numbers: the training below is unchanged
            start = layer(eval_x)
        optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.0, fused=True)
        group = optimizer.param_groups[0]
        lrs = iter(cosine_lrs(epochs * math.ceil(len(train_x) / batch_size), lr))
        for _ in range(epochs):
            order = torch.randperm(len(train_x), generator=gen)
            for x, y in zip(train_x[order].split(batch_size), train_y[order].split(batch_size)):
                group["lr"] = next(lrs)
                loss = F.cross_entropy(layer(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            scores = layer(eval_x)
    return scores, start


def convergence_warning(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
                        num_classes: int, epochs: int, seed: int = 0) -> str | None:
    """Why the protocol's linear probe cut to ``epochs`` has not converged, or None if it has.

    On a small data set a batch of 512 gives few steps per epoch (digits: 3), and Adam at lr
    4e-4 moves each weight by about lr a step at most, so a short probe ends near its random
    start (digits: 5 epochs 26 % top-1, 20 epochs 77 %, 100 epochs 98 %, kNN 99 %). Two tests,
    both measured on this probe (training on cached features costs little next to computing them):
    - nearly all its eval predictions (more than ``STILL_AT_START``) are still those of its random
      initial layer: it has hardly moved, whatever twice the epochs would add (a probe stuck at
      its start can gain nothing from 5 to 10 epochs and much by 100);
    - the same probe with twice the epochs adds more than ``CONVERGED_WITHIN`` top-1: it stopped
      while still learning, and its number says more about its budget than about the features.
    """
    scores, start = _fit_linear(train_x, train_y, eval_x, num_classes, epochs, PROBE_BATCH_SIZE, PROBE_LR, seed)
    steps = epochs * math.ceil(len(train_x) / PROBE_BATCH_SIZE)
    top1 = (scores.argmax(dim=1) == eval_y).float().mean().item()
    head = f"the linear probe has not converged: {epochs} epochs ({steps} steps) give {100 * top1:.2f} % top-1"
    unmoved = (scores.argmax(dim=1) == start.argmax(dim=1)).float().mean().item()
    if unmoved > STILL_AT_START:
        return (f"{head}, and {100 * unmoved:.0f} % of its predictions are still its random start's; "
                f"the protocol is {PROBE_EPOCHS} epochs")
    longer = linear_probe(train_x, train_y, eval_x, eval_y, num_classes, epochs=2 * epochs, seed=seed)["top1"]
    if longer - top1 > CONVERGED_WITHIN:
        return f"{head}, {2 * epochs} give {100 * longer:.2f} %; the protocol is {PROBE_EPOCHS} epochs"
    return None


def knn_probe(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
              num_classes: int, k: int = KNN_K, temperature: float = 0.07) -> dict[str, float]:
    """Cosine kNN with temperature-weighted votes (as in DINO); needs no training at all.

    With fewer than ``k`` training samples every one of them votes; the result's ``k`` says how
    many did.
    """
    train_n, eval_n = F.normalize(train_x, dim=1), F.normalize(eval_x, dim=1)
    k = min(k, len(train_x))
    scores = torch.zeros(len(eval_x), num_classes)
    for start in range(0, len(eval_x), 1024):
        sim = eval_n[start:start + 1024] @ train_n.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = F.one_hot(train_y[top_idx], num_classes).float() * (top_sim / temperature).exp().unsqueeze(-1)
        scores[start:start + 1024] = votes.sum(dim=1)
    return {**topk_accuracy(scores.numpy(), eval_y.numpy(), ks=(1, 3)), "k": k}


def probe_checkpoint(run_dir: str | Path, data: DataSplits, checkpoint_path: str | Path | None = None,
                     epochs: int = 100, device: str = "auto") -> list[dict[str, Any]]:
    """Linear and kNN probe rows for one checkpoint of a run.

    A linear probe of fewer than ``PROBE_EPOCHS`` epochs that has not converged warns
    (``ProbeNotConverged``, see ``convergence_warning``); its row is kept as computed.

    The features come from ``features.checkpoint_predictions`` (the run's precision, cached in the
    run folder): the eval split's with the heads' logits too, which evaluation then reuses.
    """
    cfg, paths = open_run(run_dir)
    dev = resolve_device(device)
    aug = augment_config(cfg, data.info)
    train, epoch = checkpoint_predictions(cfg, paths, data.info, aug, "train", data.train_images, checkpoint_path,
                                          dev, heads=False)
    evaluated, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images, checkpoint_path, dev)
    train_x, eval_x = torch.from_numpy(train.features), torch.from_numpy(evaluated.features)
    classes = len(data.info.classes)
    linear = linear_probe(train_x, data.train_labels, eval_x, data.eval_labels, classes, epochs=epochs, seed=cfg.seed)
    if epochs < PROBE_EPOCHS:  # the protocol itself is not second-guessed (nor its cost doubled)
        why = convergence_warning(train_x, data.train_labels, eval_x, data.eval_labels, classes, epochs, seed=cfg.seed)
        if why:
            warnings.warn(f"{paths.root.name}, checkpoint of epoch {epoch}: {why}", ProbeNotConverged, stacklevel=2)
    knn = knn_probe(train_x, data.train_labels, eval_x, data.eval_labels, classes)
    return [{"epoch": epoch, "probe": "linear", **linear}, {"epoch": epoch, "probe": "knn", **knn}]


def probe_run(run_dir: str | Path, checkpoint_path: str | Path | None = None, all_kept: bool = False,
              epochs: int = 100, device: str = "auto") -> list[dict[str, Any]]:
    """Probe one checkpoint, or every milestone for the probe-vs-epoch curve; writes probe.csv/json."""
    cfg, paths = open_run(run_dir)
    if all_kept:
        targets: list[Path | None] = list(checkpoint.kept(paths.checkpoints))
        if not targets:
            raise checkpoint.CheckpointError(f"{paths.checkpoints} holds no kept-epoch checkpoints (epoch_XXXX.pt)")
    else:
        targets = [Path(checkpoint_path) if checkpoint_path else None]
    data = load_data(cfg)
    rows = [row for target in targets for row in probe_checkpoint(run_dir, data, target, epochs, device)]
    rows.sort(key=lambda r: (r["probe"], r["epoch"]))
    for row in rows:
        row["probe_epochs"] = epochs if row["probe"] == "linear" else 0
    write_csv(paths.probe, rows)
    write_json(paths.probe_json, rows)
    return rows


def probe_runs(path: str | Path, checkpoint_path: str | Path | None = None, all_kept: bool = False,
               epochs: int = 100, device: str = "auto") -> list[dict[str, Any]]:
    """Probe a run or every seed run of a group; one row per run, checkpoint and probe."""
    return [{"run": str(run), **row} for run in run_folders(path)
            for row in probe_run(run, checkpoint_path, all_kept, epochs, device)]


def ensure_probed(cfg: Config, paths: RunPaths, probe_epochs: int, device: str = "auto"):
    """The run's probe rows per milestone, probing first if they are missing or were made otherwise.

    Without checkpoints (a run copied home) the probe results that came with it are used as they are.
    """
    import pandas as pd

    milestones = [checkpoint.kept_epoch(p) for p in checkpoint.kept(paths.checkpoints)]
    if paths.probe.exists():
        rows = records.read_probe(paths)
        linear = rows[rows["probe"] == "linear"]
        done = set(linear["epoch"]) >= set(milestones) and bool(
            (linear.get("probe_epochs", pd.Series([probe_epochs])) == probe_epochs).all())
        if done or not milestones:
            return rows.assign(seed=cfg.seed)
    if not milestones:
        raise FileNotFoundError(f"{paths.root} has neither probe.csv nor kept-epoch checkpoints to probe")
    probed = probe_run(paths.root, all_kept=True, epochs=probe_epochs, device=device)
    return pd.DataFrame(probed).assign(seed=cfg.seed)
