"""Pre-training: one loop for CPU, one GPU and torchrun, resumable to the same weights.

Randomness is derived from ``(seed, epoch, rank)`` at the start of every epoch instead of
being carried along, so a run resumed from an epoch checkpoint replays exactly what an
uninterrupted run would have done, with nothing but weights, optimiser and queue to restore.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sclib import __version__, checkpoint, distributed, evaluate, faults
from sclib.augment import Augmenter
from sclib.config import Config, ConfigError, differences, load_config
from sclib.data import DataSplits
from sclib.files import read_json, write_csv, write_json
from sclib.loss import SelfClassifierLoss
from sclib.model import SelfClassifier
from sclib.optim import build_optimizer, lr_at, set_lr
from sclib.runs import RunPaths, augment_config, build_model, load_data, resolve_device


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass
class NNQueue:
    """A FIFO of past embeddings; view 1's embedding is swapped for its nearest neighbour here."""

    size: int
    dim: int
    device: torch.device
    items: torch.Tensor = field(init=False)
    filled: int = 0
    pointer: int = 0

    def __post_init__(self) -> None:
        self.items = torch.zeros(self.size, self.dim, device=self.device)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        if self.filled == 0:
            return z
        bank = self.items[: self.filled]
        return bank[(z.detach().float() @ bank.T).argmax(dim=1)].to(z.dtype)

    def push(self, z: torch.Tensor) -> None:
        z = z.detach().float()[: self.size]
        end = self.pointer + len(z)
        idx = torch.arange(self.pointer, end, device=self.device) % self.size
        self.items[idx] = z
        self.pointer = end % self.size
        self.filled = min(self.size, self.filled + len(z))

    def state(self) -> dict[str, Any]:
        return {"items": self.items.cpu(), "filled": self.filled, "pointer": self.pointer}

    def load(self, state: dict[str, Any]) -> None:
        self.items = state["items"].to(self.device)
        self.filled, self.pointer = int(state["filled"]), int(state["pointer"])


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


def provenance(device: torch.device) -> dict[str, Any]:
    """What produced a run, so a number in a report can be traced to code and hardware."""
    import numpy
    import sklearn
    import torchvision

    return {
        "sclib": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "world_size": distributed.world_size(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def check_resumable(cfg: Config, paths: RunPaths) -> None:
    """Refuse to continue a run folder made with a different config, saying what differs."""
    if paths.root.exists() and not paths.root.is_dir():
        raise ConfigError(f"out {paths.root} is a file, not a folder; choose another --out")
    if paths.config.exists():
        diffs = differences(load_config(paths.config), cfg)
        if diffs:
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diffs.items())
            raise ConfigError(
                f"run folder {paths.root} was made with a different config ({listed}); "
                "rerun with the same parameters to resume, or choose another --out"
            )
    elif paths.root.is_dir() and any(paths.root.iterdir()):
        raise ConfigError(f"out {paths.root} is a non-empty folder that is not a run folder; choose another --out")


class Trainer:
    """Holds a run's moving parts; ``fit`` trains the remaining epochs and evaluates."""

    def __init__(self, cfg: Config, progress: bool = True, data: DataSplits | None = None) -> None:
        """``data`` replaces the configured data set (benchmarks pass synthetic images)."""
        self.cfg = cfg.validate()
        self.paths = RunPaths(Path(cfg.out))
        check_resumable(cfg, self.paths)
        distributed.setup()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and distributed.world_size() > 1:
            self.device = torch.device("cuda", distributed.local_rank())
        self.progress = progress and distributed.is_main_process()
        self.data = data if data is not None else load_data(cfg, download=cfg.download)
        self.info = self.data.info
        self.head = cfg.evaluated_head(len(self.info.classes))
        self._build()

    def _build(self) -> None:
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, self.info)
        if cfg.sync_bn and distributed.world_size() > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model: SelfClassifier = model.to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay, cfg.momentum)
        self.loss_fn = SelfClassifierLoss(cfg.row_tau, cfg.col_tau)
        self.augment = Augmenter(augment_config(cfg, self.info))
        images = self.data.train_images
        if self.data.unlabelled_images is not None:
            images = torch.cat([images, self.data.unlabelled_images])
        self.images = images.to(device)
        self.queue = NNQueue(cfg.nn_queue, cfg.mlp_out, device) if cfg.nn_queue else None
        self.forward = self._wrap(self.model)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0

    def _wrap(self, model: nn.Module) -> nn.Module:
        if distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    # -- schedule ---------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        batch = min(self.cfg.batch_size, len(self.images))
        world = distributed.world_size()
        if batch % world:
            raise ConfigError(f"batch_size {batch} does not split evenly over {world} processes")
        return batch

    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.global_batch

    def lr(self, step: int) -> float:
        cfg = self.cfg
        total = cfg.epochs * self.steps_per_epoch
        return lr_at(step, total, cfg.warmup_epochs * self.steps_per_epoch, cfg.lr, cfg.start_lr, cfg.min_lr)

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.epoch * self.steps_per_epoch,
            "history": self.history,
            "config": self.cfg.to_dict(),
            "queue": self.queue.state() if self.queue else None,
        }

    def restore(self) -> bool:
        state = checkpoint.load_latest(self.paths.checkpoints, map_location=self.device)
        if state is None:
            return False
        try:
            _unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise checkpoint.CheckpointError(
                f"checkpoint {state['path']} does not fit the architecture in {self.paths.config} "
                f"(backbone {self.cfg.backbone}, heads {self.cfg.heads}): {str(err).strip().splitlines()[0]}; "
                "choose another --out or delete the run folder to start over"
            ) from None
        self.epoch = int(state["epoch"])
        self.history = [dict(row) for row in state["history"]][: self.epoch]
        if self.queue and state.get("queue"):
            self.queue.load(state["queue"])
        return True

    def save(self) -> None:
        if not distributed.is_main_process():
            return
        state = self.state()
        checkpoint.save(self.paths.last, state, fault_point="checkpoint")
        if self.epoch in self.cfg.milestones or self.epoch == self.cfg.epochs:
            checkpoint.save(self.paths.checkpoints / checkpoint.milestone_name(self.epoch), state)
        write_csv(self.paths.history, self.history)

    # -- training ---------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train the epochs still to do, then evaluate the eval split into metrics.json."""
        self.restore()
        if self.epoch >= self.cfg.epochs and self.paths.metrics.exists():
            self._log(f"run {self.paths.root} is already complete ({self.epoch} epochs)")
            return read_json(self.paths.metrics)
        self._write_config()
        bar = _progress(self.cfg.epochs, self.epoch, self.progress)
        while self.epoch < self.cfg.epochs:
            row = self.train_epoch()
            self.epoch += 1
            self.history.append(row)
            self.save()
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.3g}", img_s=f"{row['images_per_s']:.0f}")
        bar.close()
        metrics = self.evaluate()
        if distributed.is_main_process():
            write_json(self.paths.metrics, metrics, fault_point="metrics")
            self._finish_config()
        return metrics

    def train_epoch(self) -> dict[str, Any]:
        self.model.train()
        rank, world = distributed.rank(), distributed.world_size()
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(epoch_seed(self.cfg.seed, self.epoch)))
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.cfg.seed, self.epoch, rank + 1))
        batch, local = self.global_batch, self.global_batch // world
        losses, assigned = [], []
        start = time.perf_counter()
        for step in range(self.steps_per_epoch):
            idx = order[step * batch + rank * local: step * batch + (rank + 1) * local].to(self.device)
            lr = self.lr(self.epoch * self.steps_per_epoch + step)
            set_lr(self.optimizer, lr)
            loss, logits = self.train_step(self.images[idx], gen)
            losses.append(loss)
            assigned.append(logits.argmax(dim=1))
            faults.maybe_kill("step")
            if self.device.type == "cpu" or step % 20 == 19:
                self._check_finite(torch.stack(losses[-20:]))
        losses_t = torch.stack(losses)
        self._check_finite(losses_t)
        elapsed = time.perf_counter() - start
        return {
            "epoch": self.epoch + 1,
            "loss": float(losses_t.mean()),
            "lr": lr,
            "clusters_used": int(torch.cat(assigned).unique().numel()),
            "images_per_s": self.steps_per_epoch * batch / elapsed,
            "seconds": elapsed,
        }

    def train_step(self, images: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch of uint8 images; returns the loss and the evaluated head's view-1 logits."""
        views = self.augment(images, gen)
        if self.device.type == "cuda":
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with self._autocast():
            outputs = self._logits(views)
        loss = self.loss_fn(outputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), outputs[self.head][0].detach()

    def _logits(self, views: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        return self.forward(views, embedding_hook=self._swap_nearest if self.queue else None)

    def _swap_nearest(self, embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
        """Replace view 1's embeddings by their nearest neighbours among past ones (official ``nn_queue``)."""
        current = embeddings[0]
        swapped = self.queue.nearest(current)
        self.queue.push(distributed.gather_with_grad(current.detach()))
        return [swapped, *embeddings[1:]]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check_finite(self, losses: torch.Tensor) -> None:
        if not bool(torch.isfinite(losses).all()):
            raise NonFiniteLossError(
                f"the loss became non-finite in epoch {self.epoch + 1}; training stopped and "
                f"{self.paths.last} keeps the last good state (epoch {self.epoch}). "
                "Lower --lr, raise the temperatures, or check the data for NaNs"
            )

    def evaluate(self) -> dict[str, float]:
        model = _unwrap(self.model)
        preds = evaluate.predict(model, self.data.eval_images, self.augment.cfg, self.device, amp=self.cfg.amp)
        metrics = evaluate.head_metrics(preds, self.data.eval_labels.numpy(), self.head)
        metrics["epoch"] = self.epoch
        return metrics

    # -- provenance -------------------------------------------------------------------------
    def _write_config(self) -> None:
        """A new run records its config and provenance; a rerun appends when and where it resumed."""
        if not distributed.is_main_process():
            return
        if self.paths.config.exists():
            record = read_json(self.paths.config)
            record.setdefault("provenance", {}).setdefault("resumed", []).append(
                {"at": _now(), "epoch": self.epoch, "device": str(self.device)})
        else:
            record = {"config": self.cfg.to_dict(), "provenance": provenance(self.device)}
        write_json(self.paths.config, record)

    def _finish_config(self) -> None:
        record = read_json(self.paths.config)
        record["provenance"]["finished"] = _now()
        write_json(self.paths.config, record)

    def _log(self, message: str) -> None:
        if distributed.is_main_process():
            print(message, file=sys.stderr)


def pretrain(cfg: Config, progress: bool = True) -> dict[str, float]:
    """Pre-train (or resume) the run in ``cfg.out`` and return its eval-split metrics."""
    try:
        return Trainer(cfg, progress=progress).fit()
    finally:
        distributed.cleanup()


def _unwrap(model: nn.Module) -> SelfClassifier:
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a bare GPU machine may lack tqdm; training does not need it
        return _NoBar()
    return tqdm(total=total, initial=initial, desc="pre-training", unit="epoch", dynamic_ncols=True)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
