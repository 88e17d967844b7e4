"""The second stage after Self-Classifier: neighbour consistency (SCAN's clustering step) on a
finished run, written to ``<run>/refine/`` beside, never over, the first stage's results.

What it trains: the run's projector and cosine heads, starting from the checkpoint's weights, on
the frozen backbone's features of the train split (cached by ``sclib.eval.features``: the backbone
runs once, so an epoch costs a small MLP's worth of work, seconds on a CPU). Each image's
``neighbours`` nearest neighbours are mined once in the backbone's feature space (``scan.
mine_neighbours``); every step pairs each image of a batch with one of its neighbours drawn at
random and minimises SCAN's loss (``scan.neighbour_consistency_loss``) on every head, the logits
divided by the run's row temperature. The backbone is not touched, so the first stage's probes
stay valid and the second stage's cost is its own.

Then, with ``self_label_epochs``, SCAN's self-labelling (``self_label``): the whole network,
backbone included, fine-tuned on the images it is confident about, their predicted class as the
label. It costs about a pre-training epoch per epoch, and it can hurt when few images pass the
threshold or the clusters are poor, so it is off by default and reported as its own row.

Files: ``refine/config.json`` (the settings and the first stage's checkpoint digest),
``refine/history.csv`` (per epoch: loss, consistency, entropy, clusters used, CPU seconds),
``refine/state.pt`` (resumable: projector + heads, optimiser, epoch), ``refine/eval.json`` (every
head on the eval split, the scored head first-class, the neighbours' label agreement, and under
``self_label`` the self-labelled network's scored head); ``refine/self_label.pt`` and
``refine/self_label_history.csv`` for self-labelling.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sclib.core.augment import AugmentConfig, Augmenter
from sclib.core.metrics import cluster_metrics
from sclib.core.model import SelfClassifier
from sclib.core.scan import balanced_weights, confident, mine_neighbours, neighbour_consistency_loss
from sclib.data import DataSplits
from sclib.eval.features import checkpoint_predictions, predict
from sclib.run import checkpoint
from sclib.run.build import augment_config, load_data, model_from_state, precision, resolve_device, run_state
from sclib.run.config import ConfigError, RefineSettings
from sclib.run.files import read_json, write_csv, write_json
from sclib.run.paths import RunPaths, open_run


class Refiner(nn.Module):
    """The run's projector and heads on backbone features: [B, D] features -> per head [B, C] logits / tau."""

    def __init__(self, projector: nn.Module, heads: nn.ModuleList, temperature: float) -> None:
        super().__init__()
        self.projector, self.heads, self.temperature = projector, heads, temperature

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        z = nn.functional.normalize(self.projector(features), dim=1)
        return [head(z) / self.temperature for head in self.heads]


def refine_folder(run_dir: str | Path) -> Path:
    return RunPaths(Path(run_dir)).refine


# The settings of each stage: a refine/ folder continues only with the same ones.
NEIGHBOUR_FIELDS = ("neighbours", "epochs", "batch_size", "lr", "weight_decay", "entropy_weight")
SELF_LABEL_FIELDS = ("self_label_epochs", "threshold", "self_label_lr", "batch_size", "weight_decay")


def refine_run(run_dir: str | Path, settings: RefineSettings | None = None, device: str = "auto",
               progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the second stage on a finished run; returns the record written to refine/eval.json.

    Raises ConfigError for bad settings or a refine/ folder made with other settings or from
    another checkpoint, CheckpointError when the run has no checkpoint.
    """
    settings = (settings or RefineSettings()).validate()
    cfg, paths = open_run(run_dir)
    dev = resolve_device(device)
    data = load_data(cfg)
    aug = augment_config(cfg, data.info)
    state = run_state(paths)
    folder = refine_folder(run_dir)
    record = {"settings": {k: getattr(settings, k) for k in NEIGHBOUR_FIELDS},
              "source_checkpoint": state.get("path", str(paths.last)),
              "source_weights": checkpoint.weights_digest(state["model"]), "source_epoch": int(state["epoch"])}
    _check_folder(folder, record)
    train, _ = checkpoint_predictions(cfg, paths, data.info, aug, "train", data.train_images, device=dev, heads=False)
    evaluated, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images, device=dev)
    model = model_from_state(cfg, data.info, state, "cpu", record["source_checkpoint"], paths)
    scored = cfg.scored_head(len(data.info.classes))
    refiner, stage = _neighbour_stage(folder, record, model, train.features, data.train_labels, settings, cfg,
                                      scored, progress, str(run_dir))
    labels = data.eval_labels.numpy()
    result = {**_evaluate(refiner, evaluated.features, labels, scored), **stage, **record,
              "split": "validation" if cfg.val_fraction else "test", "stage": "neighbour consistency"}
    if settings.epochs == 0:  # nothing trained: the first stage's heads, not a row of its own
        result["scored"] = {**result["scored"], "skipped": "neighbour consistency off (--epochs 0)"}
    first = evaluated.assignments(scored)
    result["first_stage"] = {**cluster_metrics(labels, first), "clusters_used": int(np.unique(first).size)}
    if settings.self_label_epochs:
        model.projector.load_state_dict(refiner.projector.state_dict())
        model.heads.load_state_dict(refiner.heads.state_dict())
        result["self_label"] = self_label(folder, model.to(dev), data, aug, settings, cfg, scored, dev, progress,
                                          str(run_dir))
    write_json(folder / "eval.json", result)
    return result


def _neighbour_stage(folder: Path, record: dict[str, Any], model: nn.Module, features: np.ndarray,
                     train_labels: torch.Tensor, settings: RefineSettings, cfg: Any, scored: int, progress: bool,
                     name: str) -> tuple[Refiner, dict[str, Any]]:
    """Mine the neighbours, then train (or resume) the projector and heads; returns them and the stage's costs."""
    started = time.process_time()
    x = torch.from_numpy(features)
    neighbours = mine_neighbours(x, settings.neighbours)
    mining_seconds = time.process_time() - started
    agreement = float((train_labels[neighbours] == train_labels[:, None]).float().mean())
    refiner = Refiner(copy.deepcopy(model.projector), copy.deepcopy(model.heads), cfg.row_tau)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history = _resume(folder / "state.pt", refiner, optimizer)
    if not (folder / "config.json").exists():
        write_json(folder / "config.json", record)
    for epoch in range(len(history), settings.epochs):
        row = _epoch(refiner, optimizer, x, neighbours, settings, cfg.seed, epoch, scored)
        history.append(row)
        checkpoint.save(folder / "state.pt", {"model": refiner.state_dict(), "optimizer": optimizer.state_dict(),
                                              "epoch": epoch + 1, "history": history})
        write_csv(folder / "history.csv", history)
        if progress:
            print(f"refine {name}: epoch {epoch + 1}/{settings.epochs}  loss {row['loss']:.4f}  "
                  f"clusters {row['clusters_used']}", flush=True)
    return refiner, {"neighbour_agreement": agreement, "mining_cpu_seconds": mining_seconds,
                     "cpu_seconds": mining_seconds + sum(r["cpu_seconds"] for r in history)}


def self_label(folder: Path, model: SelfClassifier, data: DataSplits, aug: AugmentConfig, settings: RefineSettings,
               cfg: Any, scored: int, device: torch.device, progress: bool, name: str) -> dict[str, Any]:
    """SCAN's self-labelling on the whole network; the scored head's metrics on the eval split.

    Each epoch first labels the train split with the current network (eval transform, scored head,
    softmax of cosines / row tau) and keeps the images whose top probability reaches
    ``threshold``; then one pass over them, each as one strong view (the run's own BYOL
    augmentation), under a cross-entropy whose class weights balance the kept classes (``scan.
    balanced_weights``). SCAN labels a weak view in every step; labelling once per epoch from the
    plain image costs one forward pass of the split instead. Stops, and says why, when fewer than
    a batch of images or fewer than half of the classes pass the threshold. Resumable
    (``refine/self_label.pt``); the run's precision (bf16 + channels-last on this CPU).
    """
    how = precision(device, cfg.amp)
    if how.channels_last:
        model.to(memory_format=torch.channels_last)
    classes = len(data.info.classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.self_label_lr, weight_decay=settings.weight_decay)
    wanted = {k: getattr(settings, k) for k in SELF_LABEL_FIELDS}
    path = folder / "self_label.pt"
    history = _resume(path, model, optimizer, wanted)
    augmenter = Augmenter(aug)
    for epoch in range(len(history), settings.self_label_epochs):
        started = time.process_time()
        probs = torch.from_numpy(predict(model, data.train_images, aug, device, amp=cfg.amp).logits[scored])
        keep, labels = confident((probs / cfg.row_tau).softmax(dim=1), settings.threshold)
        present = int(labels.unique().numel())
        if len(keep) < settings.batch_size or present < classes / 2:
            message = (f"self-labelling stopped before epoch {epoch + 1}: {len(keep)} of {len(probs)} train images "
                       f"reach softmax >= {settings.threshold}, in {present} of {classes} classes (it needs a batch "
                       f"of {settings.batch_size} in at least half of the classes); lower --threshold or train "
                       "the first stages longer")
            print(f"warning: {name}: {message}", file=sys.stderr)
            return {**_score(model, data, aug, device, cfg.amp, scored), "skipped": message, "epochs": epoch,
                    "cpu_seconds": sum(r["cpu_seconds"] for r in history)}
        row = _self_label_epoch(model, optimizer, augmenter, data.train_images[keep], labels,
                                balanced_weights(labels, classes), settings.batch_size, cfg, scored, how, device,
                                epoch)
        history.append({"epoch": epoch + 1, "confident": len(keep), "classes": present, **row,
                        "cpu_seconds": time.process_time() - started})
        checkpoint.save(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "epoch": epoch + 1, "history": history, "settings": wanted})
        write_csv(folder / "self_label_history.csv", history)
        if progress:
            print(f"self-label {name}: epoch {epoch + 1}/{settings.self_label_epochs}  {len(keep)} confident  "
                  f"loss {row['loss']:.4f}", flush=True)
    return {**_score(model, data, aug, device, cfg.amp, scored), "epochs": len(history),
            "confident": history[-1]["confident"] if history else 0,
            "cpu_seconds": sum(r["cpu_seconds"] for r in history)}


def _self_label_epoch(model: SelfClassifier, optimizer: torch.optim.Optimizer, augmenter: Augmenter,
                      images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, batch_size: int, cfg: Any,
                      scored: int, how: Any, device: torch.device, epoch: int) -> dict[str, float]:
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 500_000 + epoch)
    order = torch.randperm(len(images), generator=gen)
    losses = []
    for idx in order.split(batch_size):
        if len(idx) < 2:
            continue
        view = augmenter(images[idx].to(device), gen)[0]
        if how.channels_last:
            view = view.contiguous(memory_format=torch.channels_last)
        with how.autocast(device):
            logits = model(view)[scored]
        loss = nn.functional.cross_entropy(logits.float() / cfg.row_tau, labels[idx].to(device),
                                           weight=weights.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"loss": float(np.mean(losses)) if losses else float("nan")}


def _score(model: SelfClassifier, data: DataSplits, aug: AugmentConfig, device: torch.device, amp: bool,
           scored: int) -> dict[str, Any]:
    labels = data.eval_labels.numpy()
    assigned = predict(model, data.eval_images, aug, device, amp=amp).assignments(scored)
    return {**cluster_metrics(labels, assigned), "clusters_used": int(np.unique(assigned).size)}


def _check_folder(folder: Path, record: dict[str, Any]) -> None:
    """Refuse to continue a refine/ folder made with other settings or from other weights."""
    if not (folder / "config.json").exists():
        return
    before = read_json(folder / "config.json")
    for key in ("settings", "source_weights"):
        if before.get(key) != record[key]:
            what = "settings" if key == "settings" else "first-stage checkpoint"
            raise ConfigError(f"{folder} was made with another {what}; delete {folder} to refine afresh")


def _resume(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
            settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Load a stage's saved state into ``module`` and ``optimizer``; its history (empty if none).

    A state saved with other ``settings`` is refused in one line rather than continued.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return []
    saved = checkpoint.load(path)
    if settings is not None and saved.get("settings") != settings:
        raise ConfigError(f"{path} was made with other self-labelling settings; delete it to self-label afresh")
    module.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return [dict(r) for r in saved["history"]][: int(saved["epoch"])]


def _epoch(refiner: Refiner, optimizer: torch.optim.Optimizer, features: torch.Tensor, neighbours: torch.Tensor,
           settings: RefineSettings, seed: int, epoch: int, scored: int) -> dict[str, Any]:
    """One pass: every image once as an anchor, each paired with one of its neighbours at random.

    The randomness comes from (seed, epoch), so a resumed refine replays what an uninterrupted one does.
    """
    refiner.train()
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(features), generator=gen)
    pick = torch.randint(0, neighbours.shape[1], (len(features),), generator=gen)
    partner = neighbours[torch.arange(len(features)), pick]
    totals = {"loss": 0.0, "consistency": 0.0, "entropy": 0.0}
    assigned, steps, start = [], 0, time.process_time()
    for idx in order.split(settings.batch_size):
        if len(idx) < 2:  # batch norm needs two samples
            continue
        logits = refiner(torch.cat([features[idx], features[partner[idx]]]))
        loss = torch.zeros(())
        for head_logits in logits:
            anchors, others = head_logits.chunk(2)
            head_loss, parts = neighbour_consistency_loss(anchors, others, settings.entropy_weight)
            loss = loss + head_loss
            for key, value in parts.items():
                totals[key] += value / len(logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals["loss"] += float(loss.detach())
        assigned.append(logits[scored].detach()[: len(idx)].argmax(dim=1))
        steps += 1
    return {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in totals.items()},
            "clusters_used": int(torch.cat(assigned).unique().numel()) if assigned else 0,
            "cpu_seconds": time.process_time() - start}


@torch.no_grad()
def _evaluate(refiner: Refiner, features: np.ndarray, labels: np.ndarray, scored: int) -> dict[str, Any]:
    refiner.eval()
    logits = refiner(torch.from_numpy(features))
    heads = []
    for h, head_logits in enumerate(logits):
        assigned = head_logits.argmax(dim=1).numpy()
        heads.append({**cluster_metrics(labels, assigned), "head": h, "head_size": int(head_logits.shape[1]),
                      "clusters_used": int(np.unique(assigned).size)})
    return {"evaluated_head": scored, "scored": heads[scored], "heads": heads}


def read_refine(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's refine/eval.json, or None if it was not refined."""
    path = RunPaths(Path(run_dir)).refine_eval
    return read_json(path) if path.exists() else None

