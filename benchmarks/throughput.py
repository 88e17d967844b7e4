"""Training throughput: sclib's on-device views against a per-image DataLoader, on equal terms.

Both sides run the seed recipe of the data set they name (``make_config(dataset, "seed")``): the
same model, loss, optimiser, batch and the *same views*, in number, size and kind (the reference
builds one torchvision pipeline per view the recipe asks for, from the very AugmentConfig the
trainer's Augmenter uses, and the run stops if the two sides disagree). They differ only in where
views are made:

* sclib: uint8 images resident on the device, views augmented in batches there (timed both as a
  loop of ``Trainer.train_step`` and as a real ``Trainer.train_epoch``, whose images/s is the
  figure the training log prints);
* reference: torchvision transforms on one PIL image at a time in DataLoader workers (as many as
  the machine has CPUs, by default), the way the official code feeds its model; the views then
  go through the trainer's own ``train_step``, whose augmentation hands them on unchanged.

Images are synthetic noise of the data set's shape (the cost of a step does not depend on the
pixels). Prints images/s (source images, each making every view), the ratio, and on any device
the share of the FLOP ceiling (see common.ceiling_line).

    python benchmarks/throughput.py --device cpu [--compile]      # the CPU recipe: fp32 step, bf16 step, DataLoader
    python benchmarks/throughput.py                               # cifar10 and mnist-small, this device
    python benchmarks/throughput.py --device cuda --settings cifar10 mnist mnist-small --compile
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sclib.core.augment import AugmentConfig, Augmenter, blur_kernel_size
from sclib.run.config import STEP_MODES
from sclib.train import Trainer

BILINEAR = T.InterpolationMode.BILINEAR


def reference_views(cfg: AugmentConfig) -> list[T.Compose]:
    """One torchvision pipeline per view of the recipe (global views, then local crops), with the
    AugmentConfig's sizes, scales and probabilities: the official per-image way of making them."""
    pipelines = []
    colour = cfg.channels == 3 and cfg.style == "byol"
    for size, scale, blur_p, sol_p in Augmenter(cfg).specs():
        if cfg.style == "byol":
            ops: list[Any] = [T.RandomResizedCrop(size, scale=tuple(scale), ratio=cfg.ratio, interpolation=BILINEAR),
                              T.RandomHorizontalFlip(cfg.flip_p)]
            sigma = cfg.blur_sigma
        else:
            ops = [T.RandomAffine(cfg.affine_degrees, translate=(cfg.affine_translate,) * 2, scale=cfg.affine_scale,
                                  shear=cfg.affine_shear, interpolation=BILINEAR),
                   T.Resize(size, interpolation=BILINEAR)]
            sigma = cfg.affine_blur_sigma
        jitter = (T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue) if colour
                  else T.ColorJitter(cfg.brightness, cfg.contrast))
        ops.append(T.RandomApply([jitter], p=cfg.jitter_p))
        if colour:
            ops.append(T.RandomGrayscale(cfg.grayscale_p))
        if blur_p > 0:
            ops.append(T.RandomApply([T.GaussianBlur(blur_kernel_size(size), sigma)], p=blur_p))
        if sol_p > 0:
            ops.append(T.RandomSolarize(math.ceil(255 * cfg.solarize_threshold), p=sol_p))
        pipelines.append(T.Compose([*ops, T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]))
    return pipelines


class PerImageViews(Dataset):
    """The official pipeline's shape: one PIL image in, every view of the recipe out."""

    def __init__(self, images: torch.Tensor, cfg: AugmentConfig) -> None:
        self.images = images.permute(0, 2, 3, 1).squeeze(-1).numpy()
        self.views = reference_views(cfg)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        img = Image.fromarray(self.images[i])
        return tuple(view(img) for view in self.views)


def check_same_views(trainer: Trainer, dataset: PerImageViews) -> list[tuple[int, ...]]:
    """The views both sides make, as shapes; raises if they differ in number or shape, because
    then the comparison would not be of the same work."""
    ours = [tuple(v.shape[1:]) for v in trainer.augment(trainer.images[:2], torch.Generator(trainer.device))]
    theirs = [tuple(v.shape) for v in dataset[0]]
    if ours != theirs:
        raise ValueError(f"unfair comparison: sclib makes {len(ours)} views {ours}, the reference "
                         f"{len(theirs)} views {theirs}; both must follow the same recipe")
    return ours


def time_steps(trainer: Trainer, steps: int, warmup: int) -> float:
    """images/s of a plain loop of ``train_step`` on random batches."""
    gen = torch.Generator(device=trainer.device).manual_seed(0)
    batch = trainer.global_batch
    trainer.model.train()
    for i in range(warmup + steps):
        if i == warmup:
            common.sync(trainer.device)
            start = time.perf_counter()
        idx = torch.randint(0, len(trainer.images), (batch,), device=trainer.device, generator=gen)
        trainer.train_step(trainer.images[idx], gen)
    common.sync(trainer.device)
    return steps * batch / (time.perf_counter() - start)


def time_epoch(trainer: Trainer) -> float:
    """images/s of a real ``train_epoch`` (the training log's figure), after one warm-up epoch."""
    trainer.train_epoch()
    return trainer.train_epoch()["images_per_s"]


def time_reference(trainer: Trainer, steps: int, warmup: int, workers: int) -> float:
    """images/s of DataLoader-made views through the trainer's own step."""
    dataset = PerImageViews(trainer.data.train_images, trainer.augment.cfg)
    check_same_views(trainer, dataset)
    loader = DataLoader(dataset, batch_size=trainer.global_batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=trainer.device.type == "cuda", persistent_workers=workers > 0)
    batches = iter(loader)
    ready: list[torch.Tensor] = []
    own = trainer.augment
    trainer.augment = lambda images, generator: ready  # the step takes the loader's views as they are
    try:
        for i in range(warmup + steps):
            if i == warmup:
                common.sync(trainer.device)
                start = time.perf_counter()
            try:
                views = next(batches)
            except StopIteration:
                batches = iter(loader)
                views = next(batches)
            ready[:] = [v.to(trainer.device, non_blocking=True) for v in views]
            trainer.train_step(ready[0], None)
        common.sync(trainer.device)
    finally:
        trainer.augment = own
    return steps * trainer.global_batch / (time.perf_counter() - start)


def report(device: str, batch: int, steps: int, warmup: int, workers: int, settings: list[str],
           step_mode: str = "auto", compile: bool = False, compile_mode: str = "default",
           peak_tflops: float | None = None) -> dict[str, dict[str, Any]]:
    """Print and return, per setting: views, step, epoch and reference images/s, FLOPs per image."""
    dev = torch.device(device)
    name = common.device_name(dev)
    peak = peak_tflops or common.measured_peak_tflops(dev)
    print(f"device: {name}; torch {torch.__version__}; batch {batch}; {steps} timed steps after {warmup} warm-up; "
          f"reference DataLoader workers: {workers}; compile: {compile_mode if compile else 'off'}", flush=True)
    print(f"{'setting':<36}{'views':>6}{'step img/s':>12}{'epoch img/s':>13}{'reference img/s':>17}{'ratio':>7}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings:
            trainer = common.recipe_trainer(setting, os.path.join(tmp, setting), device, batch, steps,
                                            step_mode=step_mode, compile=compile, compile_mode=compile_mode)
            views = check_same_views(trainer, PerImageViews(trainer.data.train_images[:1], trainer.augment.cfg))
            epoch = time_epoch(trainer)
            step = time_steps(trainer, steps, warmup)
            ref = time_reference(trainer, steps, warmup, workers)
            flops = common.flops_per_image(trainer)
            label = f"{setting} ({trainer.cfg.backbone}, {trainer.cfg.image_size} px)"
            print(f"{label:<36}{len(views):>6}{step:>12.0f}{epoch:>13.0f}{ref:>17.0f}{epoch / ref:>7.2f}", flush=True)
            print(f"{'':<4}{common.ceiling_line(name, epoch, flops, peak)}", flush=True)
            if setting == "cifar10":
                print(f"{'':<4}a CIFAR-10 epoch (50,000 images) at this rate: {50_000 / epoch:.2f} s", flush=True)
            results[setting] = dict(views=len(views), step=step, epoch=epoch, reference=ref, flops=flops, peak=peak,
                                    compile_s=trainer.progress.compile_seconds)
    return results


def cpu_report(batch: int, steps: int, warmup: int, workers: int, settings: list[str], compile: bool = False,
               compile_mode: str = "default") -> dict[str, dict[str, float]]:
    """Print and return, per setting, on this CPU: images/s of the fp32 eager step (the CPU step
    before precision followed the hardware), of the step runs take now (bf16 autocast and
    channels-last where the CPU does bf16 natively; else fp32 again), optionally compiled, and of
    the per-image DataLoader reference feeding that same step; the ratios, and each rate as a share
    of this CPU's measured bf16 matmul rate (FLOPs per image are the same in either precision)."""
    cpu = torch.device("cpu")
    name = common.device_name(cpu)
    peaks = {dtype: common.measured_peak_tflops(cpu, dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    print(f"device: {name}; torch {torch.__version__}; batch {batch}; {steps} timed steps after {warmup} warm-up; "
          f"reference DataLoader workers: {workers}; measured matmul rate: fp32 {peaks[torch.float32]:.3f}, "
          f"bf16 {peaks[torch.bfloat16]:.3f} TFLOP/s", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings:
            def make(label: str, setting: str = setting, **overrides: Any) -> Trainer:
                return common.recipe_trainer(setting, os.path.join(tmp, setting, label), "cpu", batch, steps,
                                             **overrides)

            before, now = make("fp32", amp=False), make("now", amp=True)
            flops = common.flops_per_image(now)
            print(f"{setting} ({common.SETTINGS[setting].about}; {now.cfg.image_size} px, width "
                  f"{now.cfg.small_width}, {len(now.augment.specs())} views): {flops / 1e9:.3g} GFLOP per image",
                  flush=True)
            rows = {"fp32 eager step (the CPU step before)": time_steps(before, steps, warmup),
                    f"the step now: {now.precision}": time_steps(now, steps, warmup)}
            if compile:
                compiled = make("compiled", amp=True, compile=True, compile_mode=compile_mode)
                began = time.perf_counter()
                time_steps(compiled, 1, 0)  # the first step traces and compiles
                first = time.perf_counter() - began
                rows[f"the step now + torch.compile (first step {first:.0f} s)"] = time_steps(compiled, steps, warmup)
            rows["per-image DataLoader views + the step now"] = time_reference(now, steps, warmup, workers)
            rates = list(rows.values())
            base, new, ref = rates[0], rates[1], rates[-1]
            for label, rate in rows.items():
                share = 100 * rate * flops / (peaks[torch.bfloat16] * 1e12)
                print(f"    {label:<70}{rate:>8.0f} img/s {rate / base:>6.2f}x fp32  "
                      f"{share:>5.1f}% of the bf16 matmul rate", flush=True)
            print(f"    the step now: {new / base:.2f}x the fp32 step, {new / ref:.2f}x the DataLoader reference; "
                  f"a CIFAR epoch (50,000 images) takes {50_000 / new:.0f} s", flush=True)
            results[setting] = {**rows, "flops": flops, "peak_bf16": peaks[torch.bfloat16]}
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 256 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 8 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 2 on CPU)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="reference DataLoader workers (default: this machine's CPU count)")
    parser.add_argument("--settings", nargs="+", default=None, choices=list(common.SETTINGS),
                        help="default: cifar10 and mnist-small on CUDA, cifar10-fast (the CPU recipe) on a CPU")
    parser.add_argument("--step-mode", choices=STEP_MODES, default="auto",
                        help="sclib's training step (Config step_mode); auto: sync-free on CUDA only, as in training")
    parser.add_argument("--compile", action="store_true", help="torch.compile (both sides share the compiled step)")
    parser.add_argument("--compile-mode", default="default")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if not cuda:
        warmup = 2 if args.warmup is None else args.warmup
        cpu_report(batch=args.batch_size or 256, steps=args.steps or 8, warmup=warmup, workers=args.workers,
                   settings=args.settings or ["cifar10-fast"], compile=args.compile, compile_mode=args.compile_mode)
        return
    report(
        device="cuda",
        batch=args.batch_size or 512,
        steps=args.steps or 30,
        warmup=5 if args.warmup is None else args.warmup,
        workers=args.workers,
        settings=args.settings or ["cifar10", "mnist-small"],
        step_mode=args.step_mode,
        compile=args.compile,
        compile_mode=args.compile_mode,
    )


if __name__ == "__main__":
    main()
