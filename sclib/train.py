"""Pre-training: one loop for CPU, one GPU and torchrun, resumable to the same weights.

Randomness is derived from ``(seed, epoch, rank)`` at the start of every epoch instead of
being carried along, so a run resumed from an epoch checkpoint replays exactly what an
uninterrupted run would have done, with nothing but weights, optimiser and queue to restore.
A run is built once from its Config (:func:`sclib.run.build.build_parts`); the Trainer trains
those parts, and :class:`sclib.run.progress.Progress` tells the user how it goes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sclib.core import distributed
from sclib.core.loss import SelfClassifierLoss, clusters_used
from sclib.core.model import SelfClassifier
from sclib.core.nnqueue import NNQueue
from sclib.core.optim import build_optimizer, lr_at, set_fused, set_lr
from sclib.data import split_counts
from sclib.eval import evaluate, features
from sclib.eval.checks import collapse_warning
from sclib.run import checkpoint
from sclib.run.build import RunParts, build_parts, load_data, misfit
from sclib.run.config import Config, ConfigError, Recipe, load_config
from sclib.run.files import write_csv, write_json
from sclib.run.lifecycle import check_resumable, lock_run, provenance, record_finish, record_start, seed_configs
from sclib.run.paths import RunPaths, run_folders
from sclib.run.progress import Progress
from sclib.run.records import check_finished, finished_metrics

# The phases of a step, each a torch.profiler range "sclib.<phase>" (benchmarks/profile_step.py
# reads them); "sclib.collective" ranges (gathers, all_reduces) nest inside loss and backward.
PHASES = ("data", "augment", "forward", "loss", "backward", "optimizer", "sync")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


def phase(name: str) -> contextlib.AbstractContextManager:
    """A named range of the step for torch.profiler ("sclib.<name>", one of PHASES)."""
    return torch.profiler.record_function(f"sclib.{name}")


class Trainer:
    """Trains a run's built parts (:func:`sclib.run.build.build_parts`) epoch by epoch, saving
    after each, then evaluates; ``progress`` is "bar" (or True), "log" or "off" (or False)."""

    def __init__(self, parts: RunParts, progress: bool | str = True) -> None:
        self.cfg, self.data, self.info = parts.cfg, parts.data, parts.data.info
        self.device, self.precision, self.sync_free = parts.device, parts.precision, parts.sync_free
        self.model, self.augment, self.images = parts.model, parts.augment, parts.images
        self.scored_head, self.notes = parts.scored_head, parts.notes
        self.paths = RunPaths(Path(self.cfg.out))
        cfg = self.cfg
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay, cfg.momentum,
                                         fused=self.sync_free)
        self.loss_fn = SelfClassifierLoss(cfg.row_tau, cfg.col_tau)
        # compiled alone only: the gathers of a multi-process loss do not trace
        alone = distributed.world_size() == 1
        self.compute_loss = torch.compile(self.loss_fn) if cfg.compile and alone else self.loss_fn
        self.queue = NNQueue(cfg.nn_queue, cfg.mlp_out, self.device) if cfg.nn_queue else None
        self.forward = self._wrap(self.model)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        if self.global_batch % distributed.world_size():
            raise ConfigError(f"batch_size {self.global_batch} does not split evenly over "
                              f"{distributed.world_size()} processes")
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else None
        self.progress = Progress(progress, str(self.paths.root), cfg.epochs, self.steps_per_epoch, self.device.type,
                                 compile_mode=cfg.compile_mode if cfg.compile else None, synchronize=sync)

    @classmethod
    def from_config(cls, cfg: Config, progress: bool | str = True) -> Trainer:
        """The trainer of a resolved Config: its data set loaded, its parts built (under torchrun
        after joining the process group, so each process takes its own GPU)."""
        distributed.setup()
        return cls(build_parts(cfg, load_data(cfg, download=cfg.download)), progress)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.cfg.compile:
            model = torch.compile(model, mode=None if self.cfg.compile_mode == "default" else self.cfg.compile_mode)
        return model

    @property
    def global_batch(self) -> int:
        """Images per step over all processes: the batch size, or every image of a smaller data set."""
        return min(self.cfg.batch_size, len(self.images))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.global_batch

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled model replays CUDA graphs (its outputs are reused by the next step)."""
        return self.cfg.compile and self.device.type == "cuda" and self.cfg.compile_mode == "reduce-overhead"

    def lr(self, step: int) -> float:
        cfg, steps = self.cfg, self.steps_per_epoch
        return lr_at(step, cfg.epochs * steps, cfg.warmup_epochs * steps, cfg.lr, cfg.start_lr, cfg.min_lr)

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.epoch * self.steps_per_epoch,
            "history": self.history,
            "config": self.cfg.to_dict(),
            "queue": self.queue.state_dict() if self.queue else None,
        }

    def restore(self) -> bool:
        state = checkpoint.load_latest(self.paths.checkpoints, map_location=self.device, require=checkpoint.FOR_RESUME)
        if state is None:
            return False
        try:
            _unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            set_fused(self.optimizer, self.sync_free)  # the checkpoint's flag is the saving device's
        except (RuntimeError, ValueError, KeyError) as err:
            raise misfit(state["path"], self.cfg, self.paths, err,
                         "; choose another --out or delete the run folder to start over") from None
        self.epoch = int(state["epoch"])
        self.history = [dict(row) for row in state["history"]][: self.epoch]
        if self.queue and state.get("queue"):
            self.queue.load_state_dict(state["queue"])
        return True

    def save(self) -> None:
        if not distributed.is_main_process():
            return
        state = self.state()
        checkpoint.save(self.paths.last, state)
        if self.epoch in self.cfg.keep_epochs or self.epoch == self.cfg.epochs:
            checkpoint.save(self.paths.checkpoints / checkpoint.kept_name(self.epoch), state)
        write_csv(self.paths.history, self.history)

    # -- training ---------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train the epochs still to do (resuming from the run's last checkpoint), then evaluate
        the eval split into metrics.json."""
        for note in self.notes:
            self.progress.log(note)
        resumed = self.restore()
        if distributed.is_main_process():
            record_start(self.paths, self.cfg, provenance(self.device, str(self.precision)), split_counts(self.data),
                         resumed_at=self.epoch if resumed else None)
        self.progress.say(f"precision: {self.precision}")
        if resumed:
            self.progress.say(f"resuming {self.paths.root} from epoch {self.epoch} of {self.cfg.epochs}")
        self.progress.start(self.epoch)
        while self.epoch < self.cfg.epochs:
            row = self.train_epoch()
            self.epoch += 1
            self.history.append(row)
            self.save()
            self.progress.epoch_done(row)
        self.progress.close()
        metrics = self.evaluate()
        if distributed.is_main_process():
            write_json(self.paths.metrics, metrics)
            record_finish(self.paths)
        return metrics

    def train_epoch(self) -> dict[str, Any]:
        """One pass over the training images in this epoch's order; its row of history.csv."""
        self.model.train()
        if self.device.type == "cuda":  # sync-free: a step's shapes never change, so cuDNN times its algorithms once
            torch.backends.cudnn.benchmark = self.sync_free
        rank, world = distributed.rank(), distributed.world_size()
        order_gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, self.epoch))
        order = torch.randperm(len(self.images), generator=order_gen)
        order = order.to(self.device)  # one host-to-device copy an epoch, not one (and a sync) a step
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.cfg.seed, self.epoch, rank + 1))
        batch, local = self.global_batch, self.global_batch // world
        losses, scored_logits = [], []
        self.progress.begin_epoch(self.epoch)
        for step in range(self.steps_per_epoch):
            with phase("data"):
                idx = order[step * batch + rank * local: step * batch + (rank + 1) * local]
                lr = self.lr(self.epoch * self.steps_per_epoch + step)
                set_lr(self.optimizer, lr)
            loss, logits = self.train_step(self.images[idx], gen, idx)
            losses.append(loss)
            scored_logits.append(logits)
            self.progress.step()
            if self.device.type == "cpu" or step % 20 == 19:  # on a GPU a sync every 20 steps, not each
                with phase("sync"):
                    self._check_finite(torch.stack(losses[-20:]))
        losses_t = torch.stack(losses)
        self._check_finite(losses_t)
        seconds, cpu_seconds = self.progress.end_epoch()
        return {"epoch": self.epoch + 1, "loss": float(losses_t.mean()), "lr": lr,
                "clusters_used": clusters_used(torch.cat(scored_logits)),
                "images_per_s": self.steps_per_epoch * batch / seconds, "seconds": seconds, "cpu_seconds": cpu_seconds}

    def train_step(self, images: torch.Tensor, gen: torch.Generator,
                   indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch of uint8 images (B, C, H, W): views, forward, loss,
        backward, step. Returns the loss and the scored head's view-1 logits (B, classes), detached.

        ``indices`` (B,) are the images' positions in the training set: the nearest-neighbour
        queue needs them so that no image is ever paired with its own earlier embedding.
        """
        with phase("augment"):
            views = self.augment(images, gen)
        if self.cuda_graphs and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        with phase("forward"), self.precision.autocast(self.device):
            if self.precision.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            if self.queue is None:
                outputs = self.forward(views)
            elif indices is None:
                raise ValueError("the nearest-neighbour queue needs the batch's indices in the training set")
            else:
                outputs = self.forward(views, embedding_hook=functools.partial(self._swap_nearest, indices))
        with phase("loss"):
            loss = self.compute_loss(outputs)
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with phase("optimizer"):
            self.optimizer.step()
        logits = outputs[self.scored_head][0].detach()
        # a CUDA graph's outputs live in memory its next replay overwrites
        return loss.detach(), logits.clone() if self.cuda_graphs else logits

    def _swap_nearest(self, indices: torch.Tensor, embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
        """Swap view 1's embeddings for their nearest other samples in the queue, then queue them
        (gathered from every rank), as the official training step does."""
        current = embeddings[0].detach()
        swapped = self.queue.nearest(current, indices)
        self.queue.push(distributed.gather_with_grad(current), distributed.gather_with_grad(indices))
        return [swapped, *embeddings[1:]]

    def _check_finite(self, losses: torch.Tensor) -> None:
        if not bool(torch.isfinite(losses).all()):
            kept = (f"{self.paths.last} keeps the last good state (epoch {self.epoch})" if self.paths.last.exists()
                    else f"no checkpoint was written yet, so {self.paths.root} can start afresh with other parameters")
            raise NonFiniteLossError(
                f"the loss became non-finite in epoch {self.epoch + 1}; training stopped and {kept}. "
                "Lower --lr, raise the temperatures, or check the data for NaNs"
            )

    def evaluate(self) -> dict[str, float]:
        model = _unwrap(self.model)
        preds = features.predict(model, self.data.eval_images, self.augment.cfg, self.device, amp=self.cfg.amp)
        metrics = evaluate.head_metrics(preds, self.data.eval_labels.numpy(), self.scored_head)
        metrics["epoch"] = self.epoch
        metrics["num_classes"] = len(self.info.classes)
        warning = collapse_warning(metrics, len(self.data.eval_labels))
        if warning:
            metrics["warning"] = warning
            self.progress.log(f"warning: {warning}")
        return metrics


def pretrain(cfg: Config, progress: bool | str = True) -> dict[str, float]:
    """Pre-train (or resume) the run in ``cfg.out`` and return its eval-split metrics.

    ``cfg`` is a resolved, validated Config (``Recipe.resolve``). The run folder is locked while
    it trains (``lifecycle.lock_run``): a second process started on the same folder raises
    FolderBusyError naming the first, whatever its parameters. Under torchrun only rank 0 (by
    ``RANK``) takes the lock, before the process group exists.
    """
    paths = RunPaths(Path(cfg.out))
    check_resumable(cfg, paths)  # a run trained elsewhere and copied home without checkpoints still counts
    done = finished_metrics(paths, cfg.epochs)
    if done is not None:
        if distributed.is_main_process() and progress not in (False, "off"):
            print(f"run {cfg.out} is already complete ({cfg.epochs} epochs)", file=sys.stderr)
        return done
    main = os.environ.get("RANK", "0") == "0"
    with lock_run(paths) if main else contextlib.nullcontext():
        check_resumable(cfg, paths)  # again under the lock: a writer that just finished may have changed it
        try:
            return Trainer.from_config(cfg, progress).fit()
        finally:
            distributed.cleanup()


def pretrain_seeds(configs: list[Config], progress: bool | str = True) -> list[dict[str, Any]]:
    """Pre-train every run (a recipe's seeds, ``lifecycle.seed_configs``), each resumable on its
    own; one row of metrics per run.

    Every seed's folder is checked before the first trains, so a refused seed 2 does not wait
    behind hours of seeds 0 and 1.
    """
    for cfg in configs:
        check_resumable(cfg, RunPaths(Path(cfg.out)))
    return [{"run": cfg.out, **pretrain(cfg, progress)} for cfg in configs]


def _unwrap(model: nn.Module) -> SelfClassifier:
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def prepare_runs(dataset: str, preset: str, run_dir: str | Path, seeds: list[int],
                 config_overrides: dict[str, Any] | None = None, config_file: str | None = None,
                 train: bool = True, progress: str = "log") -> list[Config]:
    """The seed runs of a study: trained (or resumed) here, or, with ``train=False``, read as finished.

    ``train=False`` renders runs made elsewhere (a GPU machine) from their own config.json, so
    neither the recipe nor the data set nor a checkpoint needs to be here.
    """
    if not train:
        runs = [(load_config(RunPaths(f).config), RunPaths(f)) for f in run_folders(run_dir)]
        check_finished(runs, "train it first or pass train=True")
        for cfg, paths in runs:
            cfg.out = str(paths.root)
        return [cfg for cfg, _ in runs]
    recipe = Recipe(dataset=dataset, preset=preset, file=config_file,
                    overrides={**(config_overrides or {}), "out": str(run_dir)})
    configs = seed_configs(recipe.resolve(), seeds)
    for cfg in configs:
        pretrain(cfg, progress=progress)
    return configs
