"""Pre-training: one loop for CPU, one GPU and torchrun, resumable to the same weights.

Randomness is derived from ``(seed, epoch, rank)`` at the start of every epoch instead of
being carried along, so a run resumed from an epoch checkpoint replays exactly what an
uninterrupted run would have done, with nothing but weights, optimiser and queue to restore.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from sclib.core import distributed
from sclib.core.augment import Augmenter
from sclib.core.loss import SelfClassifierLoss, clusters_used
from sclib.core.model import SelfClassifier
from sclib.core.nnqueue import NNQueue
from sclib.core.optim import build_optimizer, lr_at, set_fused, set_lr
from sclib.data import DataSplits, counts_line, split_counts
from sclib.eval import evaluate, features
from sclib.eval.checks import collapse_warning
from sclib.run import checkpoint, faults
from sclib.run.build import augment_config, build_model, load_data, misfit, precision, resolve_device, size_notes
from sclib.run.config import Config, ConfigError, Recipe, load_config
from sclib.run.files import write_csv, write_json
from sclib.run.lifecycle import check_resumable, lock_run, provenance, record_finish, record_start, seed_configs
from sclib.run.paths import RunPaths, run_folders
from sclib.run.records import check_finished, finished_metrics

# The phases of a step, each a torch.profiler range "sclib.<phase>" (benchmarks/profile_step.py
# reads them); "sclib.collective" ranges (gathers, all_reduces) nest inside loss and backward.
PHASES = ("data", "augment", "forward", "loss", "backward", "optimizer", "sync")

# After this many steps of the first epoch a run estimates the time it will take.
ESTIMATE_AFTER_STEPS = 5
LONG_RUN_SECONDS = 15 * 60


def long_run_message(seconds: float, epochs: int, device: str) -> str | None:
    """What a user should hear before a long run: the estimate and how to shorten it (None if short).

    Nothing is refused; a run of hours may be exactly what was meant.
    """
    if seconds < LONG_RUN_SECONDS:
        return None
    hours, minutes = divmod(round(seconds / 60), 60)
    took = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    shorter = ("fewer --epochs, a smaller --image-size or --small-width, or a GPU (--preset gpu)"
               if device == "cpu" else "fewer --epochs or a smaller --image-size")
    return (f"note: the {epochs} epochs still to do will take about {took} on this {device} (measured on the "
            f"first steps); to shorten the run: {shorter}. It can be stopped and resumed at any time.")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


class Trainer:
    """Holds a run's moving parts; ``fit`` trains the remaining epochs and evaluates."""

    def __init__(self, cfg: Config, progress: bool | str = True, data: DataSplits | None = None,
                 sync_free: bool | None = None) -> None:
        """``data`` replaces the configured data set (benchmarks pass synthetic images).

        ``progress``: "bar" (or True) for a tqdm bar, "log" for a few plain lines (notebooks and
        logs), False or "off" for silence.

        ``sync_free``: the GPU step, with no host sync (batched sync-free augmentation, see
        ``Augmenter(static_shapes=True)``), a fused optimiser step, cuDNN autotuning, and with
        ``--compile`` the augmentation and loss compiled too. None (default): on CUDA only, because on a CPU it
        does more arithmetic and rounds the optimiser step differently, and CPU runs must stay
        bit-identical. Benchmarks pass False for the eager GPU step as it was before; tests pass
        True to check the tuned step on a CPU.
        """
        self.cfg = cfg.validate()
        self.paths = RunPaths(Path(cfg.out))
        check_resumable(cfg, self.paths)
        distributed.setup()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and distributed.world_size() > 1:
            self.device = torch.device("cuda", distributed.local_rank())
        self.precision = precision(self.device, cfg.amp)
        self.progress = {True: "bar", False: "off"}.get(progress, progress) if distributed.is_main_process() else "off"
        self.sync_free = self.device.type == "cuda" if sync_free is None else sync_free
        # called with each phase's name as it ends (benchmarks time phases with CUDA events)
        self.phase_hook: Callable[[str], None] | None = None
        self.estimated = False  # whether the time the run will take was estimated (after a few steps)
        self.compile_seconds: float | None = None
        # the clock that times steps and epochs (seconds); tests put in a scripted one, so what
        # they assert about the estimates never depends on how busy the machine is
        self.clock: Callable[[], float] = time.perf_counter
        # called after every training step (fit's progress bar counts steps with it)
        self.step_hook: Callable[[], None] | None = None
        self.data = data if data is not None else load_data(cfg, download=cfg.download)
        self.info = self.data.info
        self.counts = split_counts(self.data)
        if self.info.name == "imagefolder":  # what the walk of the tree found, so a stray folder shows
            self._log(f"image folder {cfg.data_root}: {counts_line(self.counts)}")
        extra = 0 if self.data.unlabelled_images is None else len(self.data.unlabelled_images)
        for note in size_notes(cfg, len(self.data.train_images) + extra, len(self.data.eval_labels),
                               len(self.info.classes)):
            self._log(f"note: {note}")
        self.scored_head = cfg.scored_head(len(self.info.classes))
        warning = cfg.head_warning(len(self.info.classes))
        if warning:
            self._log(f"warning: {warning}")
        self._build()

    def _build(self) -> None:
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, self.info)
        if cfg.sync_bn and distributed.world_size() > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model: SelfClassifier = model.to(device)
        if self.precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay, cfg.momentum,
                                         fused=self.sync_free)
        self.loss_fn = SelfClassifierLoss(cfg.row_tau, cfg.col_tau)
        # compiled alone only: the gathers of a multi-process loss do not trace
        self.compute_loss = (torch.compile(self.loss_fn) if cfg.compile and distributed.world_size() == 1
                             else self.loss_fn)
        self.augment = Augmenter(augment_config(cfg, self.info), static_shapes=self.sync_free,
                                 compile=cfg.compile and self.sync_free)
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
            model = torch.compile(model, mode=None if self.cfg.compile_mode == "default" else self.cfg.compile_mode)
        return model

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled model replays CUDA graphs (its outputs are reused by the next step)."""
        return self.cfg.compile and self.device.type == "cuda" and self.cfg.compile_mode == "reduce-overhead"

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
        checkpoint.save(self.paths.last, state, fault_point="checkpoint")
        if self.epoch in self.cfg.keep_epochs or self.epoch == self.cfg.epochs:
            checkpoint.save(self.paths.checkpoints / checkpoint.milestone_name(self.epoch), state)
        write_csv(self.paths.history, self.history)

    # -- training ---------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train the epochs still to do, then evaluate the eval split into metrics.json."""
        resumed = self.restore()
        done = finished_metrics(self.paths, self.cfg.epochs) if self.epoch >= self.cfg.epochs else None
        if done is not None:
            self._log(f"run {self.paths.root} is already complete ({self.epoch} epochs)")
            return done
        self._write_config(resumed)
        if self.progress != "off":  # with --no-progress a run prints errors and warnings only
            self._say(f"precision: {self.precision}")
            if resumed:
                self._say(f"resuming {self.paths.root} from epoch {self.epoch} of {self.cfg.epochs}")
        progress = _Progress(self.progress, self.cfg.epochs, self.epoch, str(self.paths.root),
                             steps_per_epoch=self.steps_per_epoch, clock=self.clock)
        self.step_hook = progress.step
        while self.epoch < self.cfg.epochs:
            row = self.train_epoch()
            self.epoch += 1
            self.history.append(row)
            self.save()
            progress.update(row)
        progress.close()
        metrics = self.evaluate()
        if distributed.is_main_process():
            write_json(self.paths.metrics, metrics, fault_point="metrics")
            record_finish(self.paths)
        return metrics

    def train_epoch(self) -> dict[str, Any]:
        self.model.train()
        if self.device.type == "cuda":  # tuned: a step's shapes never change, so cuDNN times its algorithms once
            torch.backends.cudnn.benchmark = self.sync_free
        rank, world = distributed.rank(), distributed.world_size()
        order_gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, self.epoch))
        order = torch.randperm(len(self.images), generator=order_gen)
        order = order.to(self.device)  # one host-to-device copy an epoch, not one (and a sync) a step
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.cfg.seed, self.epoch, rank + 1))
        batch, local = self.global_batch, self.global_batch // world
        losses, scored_logits = [], []
        start, cpu_start, compile_seconds = self.clock(), time.process_time(), 0.0
        for step in range(self.steps_per_epoch):
            with self._phase("data"):
                idx = order[step * batch + rank * local: step * batch + (rank + 1) * local]
                lr = self.lr(self.epoch * self.steps_per_epoch + step)
                set_lr(self.optimizer, lr)
                images = self.images[idx]
            timing = self.cfg.compile and self.compile_seconds is None
            began = self.clock()
            loss, logits = self.train_step(images, gen, idx)
            if timing:
                compile_seconds = self._report_compile(began)
            losses.append(loss)
            scored_logits.append(logits)
            faults.maybe_kill("step")
            if self.step_hook is not None:
                self.step_hook()
            # after a few steps, or at the end of an epoch shorter than that (a small data set)
            if step == min(ESTIMATE_AFTER_STEPS, self.steps_per_epoch - 1) and not self.estimated:
                # the compiling step says nothing about the others: leave it out of the estimate
                steps = step + 1 - (compile_seconds > 0)
                self._estimate((self.clock() - start - compile_seconds) / steps)
            if self.device.type == "cpu" or step % 20 == 19:  # on a GPU a sync every 20 steps, not each
                with self._phase("sync"):
                    self._check_finite(torch.stack(losses[-20:]))
        losses_t = torch.stack(losses)
        self._check_finite(losses_t)
        elapsed = self.clock() - start
        return {
            "epoch": self.epoch + 1,
            "loss": float(losses_t.mean()),
            "lr": lr,
            "clusters_used": clusters_used(torch.cat(scored_logits)),
            "images_per_s": self.steps_per_epoch * batch / elapsed,
            "seconds": elapsed,
            # user + system CPU seconds of this process over all its threads: the budget on a CPU,
            # where two threads give only 1.2-1.3x one and seeds run side by side one thread each
            "cpu_seconds": time.process_time() - cpu_start,
        }

    def train_step(self, images: torch.Tensor, gen: torch.Generator,
                   indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch of uint8 images; returns the loss and the scored head's view-1 logits.

        ``indices`` are the images' positions in the training set: the NN queue needs them so
        that no image is ever paired with its own earlier embedding.
        """
        with self._phase("augment"):
            views = self.augment(images, gen)
        return self.step_on_views(views, indices)

    def step_on_views(self, views: list[torch.Tensor],
                      indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The step after augmentation: forward, loss, backward, optimiser (benchmarks feed it views
        made elsewhere, so both sides of a comparison share the very same step)."""
        if self.cuda_graphs and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        with self._phase("forward"), self.precision.autocast(self.device):
            if self.precision.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            outputs = self._logits(views, indices)
        with self._phase("loss"):
            loss = self.compute_loss(outputs)
        with self._phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with self._phase("optimizer"):
            self.optimizer.step()
        logits = outputs[self.scored_head][0].detach()
        # a CUDA graph's outputs live in memory its next replay overwrites
        return loss.detach(), logits.clone() if self.cuda_graphs else logits

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """A named range for torch.profiler, then ``phase_hook`` (None outside benchmarks)."""
        with torch.profiler.record_function(f"sclib.{name}"):
            yield
        if self.phase_hook is not None:
            self.phase_hook(name)

    def _estimate(self, step_seconds: float) -> None:
        """Say early how long the run will take when that is long, and how to shorten it."""
        self.estimated = True
        steps_left = (self.cfg.epochs - self.epoch) * self.steps_per_epoch
        message = long_run_message(step_seconds * steps_left, self.cfg.epochs - self.epoch, self.device.type)
        if message:
            self._log(message)

    def _report_compile(self, began: float) -> float:
        """The first compiled step traces and compiles (model, loss, augmentation): say what it cost (s)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.compile_seconds = seconds = self.clock() - began
        self._log(f"torch.compile ({self.cfg.compile_mode}): the first step took {seconds:.1f} s, "
                  "compilation included")
        return seconds

    def _logits(self, views: list[torch.Tensor], indices: torch.Tensor | None) -> list[list[torch.Tensor]]:
        if self.queue is None:
            return self.forward(views)
        if indices is None:
            raise ValueError("the nearest-neighbour queue needs the batch's indices in the training set")
        return self.forward(views, embedding_hook=functools.partial(self._swap_nearest, indices))

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
            self._log(f"warning: {warning}")
        return metrics

    # -- provenance -------------------------------------------------------------------------
    def _write_config(self, resumed: bool) -> None:
        if distributed.is_main_process():
            record_start(self.paths, self.cfg, provenance(self.device, str(self.precision)), self.counts,
                         resumed_at=self.epoch if resumed else None)

    def _log(self, message: str) -> None:
        if distributed.is_main_process():
            print(message, file=sys.stderr)

    def _say(self, message: str) -> None:
        """A line of progress: on stdout with the epoch lines in "log" mode (a notebook showed the
        precision line on stderr, styled as an error), on stderr beside the bar on a terminal."""
        if self.progress == "log":
            if distributed.is_main_process():
                print(message, flush=True)
        else:
            self._log(message)


def pretrain(cfg: Config, progress: bool | str = True) -> dict[str, float]:
    """Pre-train (or resume) the run in ``cfg.out`` and return its eval-split metrics.

    The run folder is locked while it trains (``runs.lock_run``): a second process started on
    the same folder raises FolderBusyError naming the first, whatever its parameters. Under
    torchrun only rank 0 (by ``RANK``) takes the lock, before the process group exists.
    """
    paths = RunPaths(Path(cfg.validate().out))
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
            return Trainer(cfg, progress=progress).fit()
        finally:
            distributed.cleanup()


def pretrain_seeds(recipe: Recipe, seeds: list[int] | None = None, progress: bool | str = True) -> list[dict[str, Any]]:
    """Pre-train every seed of a recipe (each resumable on its own); one row of metrics per run.

    Every seed's folder is checked before the first trains, so a refused seed 2 does not wait
    behind hours of seeds 0 and 1.
    """
    configs = seed_configs(recipe, seeds)
    for cfg in configs:
        check_resumable(cfg, RunPaths(Path(cfg.out)))
    return [{"run": cfg.out, **pretrain(cfg, progress)} for cfg in configs]


def _unwrap(model: nn.Module) -> SelfClassifier:
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


class _Progress:
    """Training progress: a tqdm bar, a few plain lines (for notebooks and logs), or nothing.

    The bar counts steps, not epochs: a 75 s CIFAR-10 epoch showed nothing moving. It is redrawn
    at most every ``interval`` seconds of ``clock`` (the trainer's), so a step costs a counter
    and a clock reading, never a write to the terminal; an epoch's end always shows it whole.
    """

    def __init__(self, mode: str, total: int, initial: int, name: str, steps_per_epoch: int = 1,
                 clock: Callable[[], float] = time.perf_counter, interval: float = 0.25,
                 file: TextIO | None = None) -> None:
        from tqdm import tqdm  # the terminal bar: tqdm.auto warns in notebooks, where mode is "log"

        self.mode, self.total, self.name, self.steps = mode, total, name, steps_per_epoch
        self.every = max(1, total // 10)
        self.clock, self.interval = clock, interval
        self.pending, self.shown_at = 0, clock()
        # the run folder's name (seed0, seed1, ...) says which seed of a study is training
        self.bar = tqdm(total=total * steps_per_epoch, initial=initial * steps_per_epoch,
                        desc=f"pre-training {Path(name).name}", unit="step", dynamic_ncols=True,
                        mininterval=interval, file=file, disable=mode != "bar")
        self.bar.set_postfix(epoch=f"{initial + 1}/{total}")

    def step(self) -> None:
        """One training step done: the bar moves if ``interval`` has passed since it last did."""
        if self.bar.disable:
            return
        self.pending += 1
        now = self.clock()
        if now - self.shown_at >= self.interval:
            self._flush(now)

    def _flush(self, now: float) -> None:
        self.bar.update(self.pending)
        self.pending, self.shown_at = 0, now

    def update(self, row: dict[str, Any]) -> None:
        """An epoch ended: the bar at its last step, with the epoch's loss; in "log" mode a line."""
        epoch = row["epoch"]
        if not self.bar.disable:
            self.pending = epoch * self.steps - self.bar.n
            self._flush(self.clock())
            self.bar.set_postfix(epoch=f"{min(epoch + 1, self.total)}/{self.total}", loss=f"{row['loss']:.4f}",
                                 lr=f"{row['lr']:.3g}", img_s=f"{row['images_per_s']:.0f}")
        if self.mode == "log" and (epoch % self.every == 0 or epoch in (1, self.total)):
            print(f"{self.name}: epoch {epoch}/{self.total}  loss {row['loss']:.4f}  "
                  f"clusters {row['clusters_used']}  {row['images_per_s']:.0f} img/s", flush=True)

    def close(self) -> None:
        self.bar.close()


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
    configs = seed_configs(recipe, seeds)
    for cfg in configs:
        pretrain(cfg, progress=progress)
    return configs
