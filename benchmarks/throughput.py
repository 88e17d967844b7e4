"""Training throughput: sclib's on-device pipeline against a per-image DataLoader pipeline.

Both sides train the same model with the same loss and optimiser on synthetic images; they
differ only in how views are made. (a) sclib: uint8 data resident on the device, views
augmented in batches there, bf16 autocast and channels-last on CUDA (``Trainer.train_step``).
(b) reference: torchvision transforms on one PIL image at a time in DataLoader workers, the
way the official code feeds its model. Prints images/s (source images; each gives two
views) and the ratio, for a CIFAR-sized and an MNIST-sized setting.

    python benchmarks/throughput.py                 # whichever device is present
    python benchmarks/throughput.py --steps 20 --batch-size 512 --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from sclib.config import make_config
from sclib.data import DatasetInfo, DataSplits
from sclib.train import Trainer

SETTINGS = {
    "cifar": dict(backbone="resnet18", image_size=32, channels=3),
    "mnist": dict(backbone="small", image_size=28, channels=1),
}


def synthetic(n: int, channels: int, size: int, seed: int = 0) -> DataSplits:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    info = DatasetInfo("synthetic", tuple(str(i) for i in range(10)), channels, size, (0.5,) * channels, (0.25,) * channels)
    return DataSplits(info, images, labels, images[:256], labels[:256])


def make_trainer(setting: str, batch: int, device: str, n: int, out: str) -> Trainer:
    s = SETTINGS[setting]
    cfg = make_config("digits", "fast", backbone=s["backbone"], image_size=s["image_size"], batch_size=batch,
                      augment="byol", mlp_hidden=4096 if s["backbone"] == "resnet18" else 1024,
                      device=device, out=out, epochs=1)
    return Trainer(cfg, progress=False, data=synthetic(n, s["channels"], s["image_size"]))


def time_sclib(trainer: Trainer, steps: int, warmup: int) -> float:
    gen = torch.Generator(device=trainer.device).manual_seed(0)
    batch = trainer.global_batch
    trainer.model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(trainer.device)
            start = time.perf_counter()
        idx = torch.randint(0, len(trainer.images), (batch,), device=trainer.device, generator=gen)
        trainer.train_step(trainer.images[idx], gen)
    _sync(trainer.device)
    return steps * batch / (time.perf_counter() - start)


class PerImageViews(Dataset):
    """The official pipeline's shape: PIL image in, two torchvision-augmented views out."""

    def __init__(self, images: torch.Tensor, size: int, mean, std) -> None:
        self.images = images.permute(0, 2, 3, 1).squeeze(-1).numpy()
        gray = self.images.ndim == 3
        common = [T.RandomResizedCrop(size, scale=(0.14, 1.0)), T.RandomHorizontalFlip()]
        colour = [] if gray else [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(0.2)]
        blur = T.GaussianBlur(max(3, round(0.1 * size)) | 1, (0.1, 2.0))
        tail = [T.ToTensor(), T.Normalize(mean, std)]
        self.view1 = T.Compose(common + colour + [blur] + tail)
        self.view2 = T.Compose(common + colour + [T.RandomApply([blur], p=0.1), T.RandomSolarize(128, p=0.2)] + tail)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        return self.view1(img), self.view2(img)


def time_reference(trainer: Trainer, steps: int, warmup: int, workers: int) -> float:
    info = trainer.data.info
    dataset = PerImageViews(trainer.data.train_images, trainer.cfg.image_size, info.mean, info.std)
    loader = DataLoader(dataset, batch_size=trainer.global_batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=trainer.device.type == "cuda", persistent_workers=workers > 0)
    model, loss_fn, opt = trainer.forward, trainer.loss_fn, trainer.optimizer
    batches = iter(loader)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(trainer.device)
            start = time.perf_counter()
        try:
            v1, v2 = next(batches)
        except StopIteration:
            batches = iter(loader)
            v1, v2 = next(batches)
        views = [v.to(trainer.device, non_blocking=True) for v in (v1, v2)]
        with trainer._autocast():
            outputs = model(views)
        loss = loss_fn(outputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(trainer.device)
    return steps * trainer.global_batch / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(device: str, batch: int, steps: int, warmup: int, workers: int, settings: list[str]) -> dict[str, tuple[float, float]]:
    """Print and return (sclib, reference) images/s per setting."""
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"device: {name}; batch {batch}; {steps} timed steps after {warmup} warm-up; "
          f"reference DataLoader workers: {workers}")
    print(f"{'setting':<28}{'sclib img/s':>14}{'reference img/s':>18}{'ratio':>8}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings:
            n = max(batch * (steps + warmup), 2048)
            fast = time_sclib(make_trainer(setting, batch, device, n, os.path.join(tmp, setting)), steps, warmup)
            ref = time_reference(make_trainer(setting, batch, device, n, os.path.join(tmp, setting + "-ref")),
                                 steps, warmup, workers)
            s = SETTINGS[setting]
            label = f"{setting} ({s['image_size']} px, {s['backbone']})"
            print(f"{label:<28}{fast:>14.0f}{ref:>18.0f}{fast / ref:>8.2f}", flush=True)
            if setting == "cifar":
                print(f"{'':<28}CIFAR-10 epoch (50k images x 2 views) at this rate: {50_000 / fast:.1f} s", flush=True)
            results[setting] = (fast, ref)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 1 on CPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="reference DataLoader workers")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    report(
        device="cuda" if cuda else "cpu",
        batch=args.batch_size or (512 if cuda else 64),
        steps=args.steps or (30 if cuda else 3),
        warmup=args.warmup if args.warmup is not None else (5 if cuda else 1),
        workers=args.workers,
        settings=args.settings,
    )


if __name__ == "__main__":
    main()
