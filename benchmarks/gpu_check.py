"""One self-contained device check: epoch time before and after the GPU work of issue 10, the fair
ratio to a per-image DataLoader, the share of the FLOP ceiling, a profile, and a short training.

Needs only torch, torchvision, numpy, scipy, scikit-learn, tqdm and pyyaml (no papermill, no
plotting), so it runs on a bare GPU machine from a copy of the repository:

    PYTHONPATH=. python benchmarks/gpu_check.py                        # ~6 minutes on one H100/H200
    PYTHONPATH=. python benchmarks/gpu_check.py --data-root data       # real CIFAR-10 if data/ has it
    PYTHONPATH=. python benchmarks/gpu_check.py --tiny                 # seconds on a CPU (CI runs this)

Stages, in order of importance, each skipped (saying so) when the time budget (--budget-minutes)
could not hold it; a watchdog ends the run 45 s past the budget, whatever it is doing:

1. CIFAR-10 epochs with the seed recipe (ResNet-18, batch 512, 2 views): *before* (the eager step
   as it was: host-synchronising augmentation, foreach SGD), *sync-free* (batched static-shape
   augmentation, fused SGD, cuDNN autotuning), *compiled* (sync-free plus torch.compile of model,
   loss and augmentation), and *CUDA graphs* (compile mode reduce-overhead);
2. the per-image DataLoader reference (one worker per CPU) with the same model, views and batch,
   through the best variant's own step: the fair ratio;
3. the same for the small CNN on MNIST-sized images (seed mnist recipe, small backbone);
4. the profile of the eager and the best step (benchmarks/profile_step.py's table);
5. a time-boxed pre-training on the CIFAR-sized data, scored against k-means on pixels.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import profile_step
import throughput

from sclib.data import DatasetInfo, DataSplits, channel_stats, load_dataset
from sclib.eval.evaluate import kmeans_metrics
from sclib.run.build import build_parts
from sclib.run.config import make_config
from sclib.train import Trainer

# (label, step mode, compile mode or None): the variants of stage 1, "before" first
VARIANTS = [("before: eager step as in sclib 0.1", "eager", None),
            ("sync-free step: static-shape views, fused SGD", "sync-free", None),
            ("sync-free + torch.compile", "sync-free", "default"),
            ("sync-free + torch.compile reduce-overhead", "sync-free", "reduce-overhead")]
TINY = dict(backbone="small", small_width=8, image_size=8, mlp_hidden=64, heads=[10, 20])
CIFAR_EPOCH_GOAL_S, RATIO_GOAL = 1.5, 3.0


class Budget:
    """The check's time box: stages ask before they start whether their estimate still fits."""

    def __init__(self, minutes: float) -> None:
        self.end = time.monotonic() + 60 * minutes

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, seconds: float, what: str) -> bool:
        if self.left() >= seconds:
            return True
        print(f"skipped: {what} (needs ~{seconds:.0f} s, {max(0.0, self.left()):.0f} s of the budget left)", flush=True)
        return False


def synthetic_cifar(train: int, test: int, size: int = 32, classes: int = 10, seed: int = 0) -> DataSplits:
    """Colour images with a latent class: a smooth class template, randomly shifted, rescaled and noised."""
    gen = torch.Generator().manual_seed(seed)
    templates = F.interpolate(torch.rand(classes, 3, 4, 4, generator=gen), size=size, mode="bicubic",
                              align_corners=False)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, classes, (n,), generator=gen)
        x = templates[labels]
        shifts = torch.randint(-size // 4, size // 4 + 1, (n, 2), generator=gen)
        for dy, dx in shifts.unique(dim=0).tolist():  # a few dozen groups, not one loop per image
            rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().squeeze(1)
            x[rows] = x[rows].roll(shifts=(dy, dx), dims=(2, 3))
        x = x * (0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=gen)) + 0.3 * torch.randn(x.shape, generator=gen)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels

    train_x, train_y = split(train)
    eval_x, eval_y = split(test)
    mean, std = channel_stats(train_x)
    info = DatasetInfo("synthetic", tuple(f"class {i}" for i in range(classes)), 3, size, mean, std)
    return DataSplits(info, train_x, train_y, eval_x, eval_y)


def cifar_data(args: argparse.Namespace) -> tuple[DataSplits, str]:
    """The real CIFAR-10 when --data-root holds it, else a CIFAR-sized synthetic set."""
    if args.tiny:
        return synthetic_cifar(128, 64, size=8), "synthetic, 128 images of 8 px"
    if args.data_root and (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        return load_dataset("cifar10", args.data_root), f"CIFAR-10 from {args.data_root}"
    return synthetic_cifar(50_000, 10_000), "synthetic CIFAR-sized (50,000 train images, 32 px, 10 latent classes)"


def make_trainer(dataset: str, data: DataSplits, out: str, args: argparse.Namespace, step_mode: str,
                 mode: str | None, **overrides: Any) -> Trainer:
    """A Trainer for the data set's seed recipe (``mode``: a torch.compile mode, None: eager)."""
    over = {"epochs": 1, **(TINY if args.tiny else {}), **overrides}
    cfg = make_config(dataset, "seed", out=out, device=args.device, batch_size=args.batch_size, keep_epochs=[],
                      compile=mode is not None, compile_mode=mode or "default", step_mode=step_mode, **over)
    return Trainer(build_parts(cfg, data), progress=False)


def time_variants(dataset: str, data: DataSplits, tmp: str, args: argparse.Namespace, budget: Budget,
                  flops: float, name: str, **overrides: Any) -> list[dict[str, Any]]:
    """Two epochs per variant (the first warms up and compiles); the second is the one reported.
    A variant that fails (a compiler missing on the machine, say) is reported and skipped."""
    rows: list[dict[str, Any]] = []
    for i, (label, step_mode, mode) in enumerate(VARIANTS):
        if mode is not None and not args.compile:
            continue
        if mode == "reduce-overhead" and args.device != "cuda":
            continue
        estimate = (3 * rows[0]["seconds"] if rows else 10) + (1.2 * args.compile_estimate if mode else 0)
        if not budget.allows(estimate, f"{dataset}: {label}"):
            continue
        try:
            trainer = make_trainer(dataset, data, os.path.join(tmp, f"{dataset}-{i}"), args, step_mode, mode,
                                   **overrides)
            start = time.perf_counter()
            trainer.train_epoch()
            warm = time.perf_counter() - start
            row = trainer.train_epoch()
        except Exception as err:  # report and go on: the other variants still tell something
            print(f"  {label:<40} failed: {type(err).__name__}: {str(err).strip().splitlines()[0][:200]}", flush=True)
            continue
        row.update(label=label, trainer=trainer, warm_s=warm)
        rows.append(row)
        compiled = ""
        if mode:
            # what compiling really costs
            args.compile_estimate = trainer.progress.compile_seconds or args.compile_estimate
            compiled = f"; first epoch {warm:.1f} s, compile {trainer.progress.compile_seconds:.1f} s"
        print(f"  {label:<40} {row['seconds']:>7.2f} s/epoch {row['images_per_s']:>9,.0f} img/s{compiled}", flush=True)
        print(f"  {'':<40} {common.ceiling_line(name, row['images_per_s'], flops, args.peak)}", flush=True)
    return rows


def stage(dataset: str, data: DataSplits, what: str, tmp: str, args: argparse.Namespace, budget: Budget,
          name: str, **overrides: Any) -> dict[str, Any] | None:
    """Before/after epochs, the fair ratio and the ceiling share for one data set and model."""
    print(f"\n== {what} ==", flush=True)
    probe = make_trainer(dataset, data, os.path.join(tmp, f"{dataset}-flops"), args, "sync-free", None, **overrides)
    flops = common.flops_per_image(probe)
    views = throughput.check_same_views(probe, throughput.PerImageViews(data.train_images[:1], probe.augment.cfg))
    print(f"  {probe.cfg.backbone}; {len(views)} views {views}; batch {probe.global_batch}; "
          f"{probe.steps_per_epoch} steps an epoch; "
          f"{flops / 1e9:.3g} GFLOP per image (forward + backward of every view)", flush=True)
    rows = time_variants(dataset, data, tmp, args, budget, flops, name, **overrides)
    if not rows:
        return None
    best = min(rows, key=lambda r: r["seconds"])
    before = rows[0] if rows[0]["label"] == VARIANTS[0][0] else None
    result = dict(before=before, best=best, flops=flops, reference=None)
    if budget.allows(30, f"{dataset}: DataLoader reference"):
        steps, warmup = (2, 0) if args.tiny else (30, 5)
        ref = throughput.time_reference(best["trainer"], steps, warmup, args.workers)
        result["reference"] = ref
        print(f"  reference DataLoader ({args.workers} workers, same views, model, batch and step): {ref:,.0f} img/s; "
              f"fair ratio {best['images_per_s'] / ref:.2f}x (best variant, '{best['label']}')", flush=True)
    return result


def summary(name: str, cifar: dict[str, Any] | None, small: dict[str, Any] | None, args: argparse.Namespace) -> None:
    print(f"\n== summary: {name}, torch {torch.__version__}, measured matmul peak {args.peak:.3g} TFLOP/s ==")
    for title, res in (("CIFAR-10 seed recipe (ResNet-18)", cifar), ("small CNN, MNIST-sized", small)):
        if res is None:
            print(f"{title}: not measured")
            continue
        before, best = res["before"], res["best"]
        ceiling = args.peak * 1e12 / res["flops"]
        after = (f"{best['seconds']:.2f} s ({best['images_per_s']:,.0f} img/s, "
                 f"{100 * best['images_per_s'] / ceiling:.1f}% of ceiling) with '{best['label']}'")
        if before is None:
            print(f"{title}: epoch before: not measured; after {after}")
        else:
            print(f"{title}: epoch before {before['seconds']:.2f} s ({before['images_per_s']:,.0f} img/s, "
                  f"{100 * before['images_per_s'] / ceiling:.1f}% of ceiling) -> after {after}: "
                  f"{before['seconds'] / best['seconds']:.2f}x")
        if res["reference"]:
            print(f"  fair ratio to the DataLoader reference ({args.workers} workers): "
                  f"{best['images_per_s'] / res['reference']:.2f}x")
    if cifar is not None:
        per_epoch = 50_000 / cifar["best"]["images_per_s"]
        print(f"goal: CIFAR-10 epoch <= {CIFAR_EPOCH_GOAL_S} s: {per_epoch:.2f} s "
              f"({'met' if per_epoch <= CIFAR_EPOCH_GOAL_S else 'not met'})")
        if cifar["reference"]:
            ratio = cifar["best"]["images_per_s"] / cifar["reference"]
            print(f"goal: >= {RATIO_GOAL}x the reference: {ratio:.2f}x ({'met' if ratio >= RATIO_GOAL else 'not met'})")
    if small is not None and small["reference"]:
        ratio = small["best"]["images_per_s"] / small["reference"]
        print(f"goal: small CNN beats the reference: {ratio:.2f}x ({'met' if ratio > 1 else 'not met'})")
    sys.stdout.flush()


def profiles(cifar: dict[str, Any] | None, args: argparse.Namespace, budget: Budget, name: str) -> None:
    """The profile table of the eager ("before") and the best step, on a few batches."""
    if cifar is None:
        return
    seen = set()
    for which in ("before", "best"):
        row = cifar[which]
        if row is None or row["label"] in seen or not budget.allows(40, f"profile of '{row['label']}'"):
            continue
        seen.add(row["label"])
        trainer = row["trainer"]
        trainer.images = trainer.images[: trainer.global_batch * (2 if args.tiny else 10)]
        table = profile_step.format_table(profile_step.profile_trainer(trainer),
                                          f"profile: CIFAR-10 seed recipe, '{row['label']}', on {name}")
        print("\n" + table, flush=True)


def pretrain_boxed(data: DataSplits, minutes: float, args: argparse.Namespace, out: Path, budget: Budget) -> None:
    """Train as many epochs of the sync-free eager step as fit in ``minutes``, then evaluate."""
    if minutes <= 0 or not budget.allows(60 * minutes + 30, "time-boxed pre-training"):
        return
    probe = make_trainer("cifar10", data, str(out / "probe"), args, "sync-free", None)
    probe.train_epoch()
    start = time.perf_counter()
    probe.train_epoch()
    epoch_s = time.perf_counter() - start
    epochs = max(1, min(args.max_epochs, math.floor(minutes * 60 / (epoch_s * 1.05))))
    print(f"\n== time-boxed pre-training: {epochs} epochs of {epoch_s:.2f} s ==", flush=True)
    trainer = make_trainer("cifar10", data, str(out / "run"), args, "sync-free", None, epochs=epochs,
                           warmup_epochs=min(10, max(1, epochs // 10)))
    start = time.perf_counter()
    metrics = trainer.fit()
    wall = time.perf_counter() - start
    print(f"{'epoch':>6}{'loss':>9}{'lr':>9}{'clusters':>10}{'img/s':>9}{'s':>7}")
    for row in trainer.history:
        print(f"{row['epoch']:>6}{row['loss']:>9.4f}{row['lr']:>9.4f}{row['clusters_used']:>10}"
              f"{row['images_per_s']:>9.0f}{row['seconds']:>7.2f}")
    pixels = data.eval_images.reshape(len(data.eval_images), -1).float().numpy() / 255
    baseline = kmeans_metrics(pixels[:10000], data.eval_labels.numpy()[:10000], len(data.info.classes))
    print(f"pre-training: {epochs} epochs in {wall:.1f} s ({wall / epochs:.2f} s/epoch)")
    for label, m in (("self-classifier head", metrics), ("k-means on pixels", baseline)):
        print(f"{label:<22} NMI {m['nmi']:.4f}  AMI {m['ami']:.4f}  ARI {m['ari']:.4f}  ACC {m['acc']:.4f}", flush=True)


def watchdog(minutes: float) -> None:
    """End the process 45 s past the budget, so a GPU session always gets its output back."""
    def stop(signum, frame):
        print(f"\nwatchdog: {minutes + 0.75:.2f} minutes passed; stopping", flush=True)
        os._exit(3)

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, stop)
        signal.alarm(int(60 * minutes + 45))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=6.5, help="time box of the whole check")
    parser.add_argument("--data-root", default=None, help="a folder with cifar-10-batches-py (else synthetic)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="reference DataLoader workers")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled variants")
    parser.add_argument("--compile-estimate", type=float, default=120,
                        help="seconds a first compile may take (later ones are estimated from the first)")
    parser.add_argument("--train-minutes", type=float, default=1.0, help="time box of the final pre-training")
    parser.add_argument("--max-epochs", type=int, default=800)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long CPU run of every stage (for CI)")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.batch_size, args.workers, args.compile = "cpu", 32, 0, False
        args.train_minutes, args.max_epochs, args.budget_minutes = 0.02, 1, 5.0
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.device = "cuda" if cuda else "cpu"
    watchdog(args.budget_minutes)
    budget = Budget(args.budget_minutes)
    device = torch.device(args.device)
    name = common.device_name(device)
    args.peak = common.measured_peak_tflops(device, seconds=0.2 if args.tiny else 1.0)
    print(f"torch {torch.__version__}; device: {name}; measured dense matmul peak {args.peak:.3g} TFLOP/s "
          f"({'bf16' if cuda else 'float32'}); budget {args.budget_minutes} min", flush=True)
    data, what = cifar_data(args)
    print(f"data: {what}", flush=True)
    small_data = common.synthetic(128 if args.tiny else 60_000, 1, 28)
    with tempfile.TemporaryDirectory() as tmp:
        cifar = stage("cifar10", data, "CIFAR-10, seed recipe (ResNet-18, 2 global views)", tmp, args, budget, name)
        small = stage("mnist", small_data, "small CNN, MNIST-sized synthetic images (seed mnist recipe, small CNN)",
                      tmp, args, budget, name, backbone="small")
        summary(name, cifar, small, args)
        profiles(cifar, args, budget, name)
        pretrain_boxed(data, args.train_minutes, args, Path(tmp), budget)
    print("\ngpu_check: done", flush=True)


if __name__ == "__main__":
    main()
