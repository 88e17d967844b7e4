"""The second stage after Self-Classifier: neighbour consistency (SCAN's clustering step) on a
finished run, written to ``<run>/refine/`` beside, never over, the first stage's results.

What it trains: the run's projector and cosine heads, starting from the checkpoint's weights, on
the frozen backbone's features of the train split (cached by ``sclib.features``: the backbone
runs once, so an epoch costs a small MLP's worth of work, seconds on a CPU). Each image's
``neighbours`` nearest neighbours are mined once in the backbone's feature space (``scan.
mine_neighbours``); every step pairs each image of a batch with one of its neighbours drawn at
random and minimises SCAN's loss (``scan.neighbour_consistency_loss``) on every head, the logits
divided by the run's row temperature. The backbone is not touched, so the first stage's probes
stay valid and the second stage's cost is its own.

Files: ``refine/config.json`` (the settings and the first stage's checkpoint digest),
``refine/history.csv`` (per epoch: loss, consistency, entropy, clusters used, CPU seconds),
``refine/state.pt`` (resumable: projector + heads, optimiser, epoch), ``refine/eval.json`` (every
head on the eval split, the scored head first-class, and the neighbours' label agreement).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sclib import checkpoint
from sclib.config import ConfigError, RefineSettings
from sclib.features import checkpoint_predictions
from sclib.files import read_json, write_csv, write_json
from sclib.metrics import cluster_metrics
from sclib.runs import augment_config, load_data, model_from_state, open_run, resolve_device, run_state
from sclib.scan import mine_neighbours, neighbour_consistency_loss


class Refiner(nn.Module):
    """The run's projector and heads on backbone features: [B, D] features -> per head [B, C] logits / tau."""

    def __init__(self, projector: nn.Module, heads: nn.ModuleList, temperature: float) -> None:
        super().__init__()
        self.projector, self.heads, self.temperature = projector, heads, temperature

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        z = nn.functional.normalize(self.projector(features), dim=1)
        return [head(z) / self.temperature for head in self.heads]


def refine_folder(run_dir: str | Path) -> Path:
    return Path(run_dir) / "refine"


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
    source = checkpoint.weights_digest(state["model"])
    folder = refine_folder(run_dir)
    record = {"settings": asdict(settings), "source_checkpoint": state.get("path", str(paths.last)),
              "source_weights": source, "source_epoch": int(state["epoch"])}
    _check_folder(folder, record)
    train, _ = checkpoint_predictions(cfg, paths, data.info, aug, "train", data.train_images, device=dev, heads=False)
    evaluated, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images, device=dev)
    started = time.process_time()
    neighbours = mine_neighbours(torch.from_numpy(train.features), settings.neighbours)
    mining_seconds = time.process_time() - started
    agreement = float((data.train_labels[neighbours] == data.train_labels[:, None]).float().mean())
    model = model_from_state(cfg, data.info, state, "cpu", record["source_checkpoint"], paths)
    refiner = Refiner(copy.deepcopy(model.projector), copy.deepcopy(model.heads), cfg.row_tau)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history = _resume(folder, refiner, optimizer)
    features = torch.from_numpy(train.features)
    if not (folder / "config.json").exists():
        write_json(folder / "config.json", record)
    scored = cfg.scored_head(len(data.info.classes))
    for epoch in range(len(history), settings.epochs):
        row = _epoch(refiner, optimizer, features, neighbours, settings, cfg.seed, epoch, scored)
        history.append(row)
        checkpoint.save(folder / "state.pt", {"model": refiner.state_dict(), "optimizer": optimizer.state_dict(),
                                              "epoch": epoch + 1, "history": history})
        write_csv(folder / "history.csv", history)
        if progress:
            print(f"refine {run_dir}: epoch {epoch + 1}/{settings.epochs}  loss {row['loss']:.4f}  "
                  f"clusters {row['clusters_used']}", flush=True)
    labels = data.eval_labels.numpy()
    result = _evaluate(refiner, evaluated.features, labels, scored)
    first = evaluated.assignments(scored)
    result["first_stage"] = {**cluster_metrics(labels, first), "clusters_used": int(np.unique(first).size)}
    result.update(record, neighbour_agreement=agreement, mining_cpu_seconds=mining_seconds,
                  cpu_seconds=mining_seconds + sum(r["cpu_seconds"] for r in history),
                  split="validation" if cfg.val_fraction else "test", stage="neighbour consistency")
    write_json(folder / "eval.json", result)
    return result


def _check_folder(folder: Path, record: dict[str, Any]) -> None:
    """Refuse to continue a refine/ folder made with other settings or from other weights."""
    if not (folder / "config.json").exists():
        return
    before = read_json(folder / "config.json")
    for key in ("settings", "source_weights"):
        if before.get(key) != record[key]:
            what = "settings" if key == "settings" else "first-stage checkpoint"
            raise ConfigError(f"{folder} was made with another {what}; delete {folder} to refine afresh")


def _resume(folder: Path, refiner: Refiner, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    path = folder / "state.pt"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        return []
    saved = checkpoint.load(path)
    refiner.load_state_dict(saved["model"])
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
    path = refine_folder(run_dir) / "eval.json"
    return read_json(path) if path.exists() else None

