"""Linear and kNN probes on frozen backbone features (the seed's Fig. 2).

The backbone runs once per split in eval mode (batch norm frozen) and the probe trains on the
cached features: with no augmentation this is the same as training through a frozen network,
at a fraction of the cost, and it cannot touch the backbone's weights or statistics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sclib import checkpoint
from sclib.evaluate import predict
from sclib.files import write_csv, write_json
from sclib.metrics import topk_accuracy
from sclib.optim import lr_at
from sclib.runs import augment_config, load_data, load_model, open_run, resolve_device, run_folders

# Neighbours that vote in the kNN probe (DINO's 20).
KNN_K = 20

if TYPE_CHECKING:
    from sclib.data import DataSplits


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
                 num_classes: int, epochs: int = 100, batch_size: int = 512, lr: float = 4e-4,
                 seed: int = 0) -> dict[str, float]:
    """One linear layer, AdamW without weight decay, cosine decay per step (the seed's recipe).

    Features are standardised with the training split's statistics first (as MoCo v3 and MAE
    do with a BatchNorm without affine before the probe). That is a fixed affine map, so the
    probe stays linear in the features; it only spares Adam the features' uneven scales, which
    on a small data set with few steps per epoch otherwise leave the probe far from converged.
    """
    if len(train_x) < 2 or len(eval_x) < 1:
        raise ValueError(f"a linear probe needs at least 2 training and 1 eval samples, got {len(train_x)} "
                         f"and {len(eval_x)}")
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(train_x), batch_size):
            idx = order[start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, 0, lr, lr, 0.0)  # cosine from lr to 0, no warm-up
            loss = F.cross_entropy(layer(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    with torch.no_grad():
        scores = layer(eval_x)
    return topk_accuracy(scores.numpy(), eval_y.numpy(), ks=(1, 3))


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
    """Linear and kNN probe rows for one checkpoint of a run."""
    cfg, _ = open_run(run_dir)
    dev = resolve_device(device)
    model, epoch = load_model(run_dir, data.info, checkpoint_path, dev)
    aug = augment_config(cfg, data.info)
    train_x = torch.from_numpy(predict(model, data.train_images, aug, dev).features)
    eval_x = torch.from_numpy(predict(model, data.eval_images, aug, dev).features)
    classes = len(data.info.classes)
    linear = linear_probe(train_x, data.train_labels, eval_x, data.eval_labels, classes, epochs=epochs, seed=cfg.seed)
    knn = knn_probe(train_x, data.train_labels, eval_x, data.eval_labels, classes)
    return [{"epoch": epoch, "probe": "linear", **linear}, {"epoch": epoch, "probe": "knn", **knn}]


def probe_run(run_dir: str | Path, checkpoint_path: str | Path | None = None, all_milestones: bool = False,
              epochs: int = 100, device: str = "auto") -> list[dict[str, Any]]:
    """Probe one checkpoint, or every milestone for the probe-vs-epoch curve; writes probe.csv/json."""
    cfg, paths = open_run(run_dir)
    if all_milestones:
        targets: list[Path | None] = list(checkpoint.milestones(paths.checkpoints))
        if not targets:
            raise checkpoint.CheckpointError(f"{paths.checkpoints} holds no milestone checkpoints (epoch_XXXX.pt)")
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


def probe_runs(path: str | Path, checkpoint_path: str | Path | None = None, all_milestones: bool = False,
               epochs: int = 100, device: str = "auto") -> list[dict[str, Any]]:
    """Probe a run or every seed run of a group; one row per run, checkpoint and probe."""
    return [{"run": str(run), **row} for run in run_folders(path)
            for row in probe_run(run, checkpoint_path, all_milestones, epochs, device)]
