"""One self-contained device check: throughput, then a time-boxed CIFAR-10-sized pre-training.

Needs only torch, torchvision, numpy, scipy and scikit-learn (no papermill, no plotting), so it
runs on a bare GPU machine from a copy of the repository:

    PYTHONPATH=. python benchmarks/gpu_check.py                  # ~8 minutes on one GPU
    PYTHONPATH=. python benchmarks/gpu_check.py --minutes 3 --dataset cifar10 --data-root data
    PYTHONPATH=. python benchmarks/gpu_check.py --tiny           # seconds on a CPU (CI runs this)

Prints images/s of sclib's pipeline against a per-image DataLoader reference, the epoch time,
per-epoch history and the clustering metrics of the time-boxed run next to k-means on pixels.
The default data are synthetic CIFAR-sized images with 10 latent classes, so the check needs
no download; ``--dataset`` takes any sclib data set found under ``--data-root``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (the sibling benchmark script)

from sclib.config import make_config  # noqa: E402
from sclib.data import DatasetInfo, DataSplits, load_dataset  # noqa: E402
from sclib.evaluate import kmeans_metrics  # noqa: E402
from sclib.train import Trainer  # noqa: E402


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
    mean = tuple(train_x.float().div(255).mean(dim=(0, 2, 3)).tolist())
    std = tuple(train_x.float().div(255).std(dim=(0, 2, 3)).tolist())
    info = DatasetInfo("synthetic", tuple(f"class {i}" for i in range(classes)), 3, size, mean, std)
    return DataSplits(info, train_x, train_y, eval_x, eval_y)


def pretrain_boxed(data: DataSplits, minutes: float, args: argparse.Namespace, out: Path) -> None:
    """Time one epoch, then train as many epochs as fit in ``minutes`` and evaluate."""
    base = dict(backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size, augment="byol",
                heads=[10, 20, 40, 80], mlp_hidden=args.mlp_hidden, device=args.device, amp=True,
                compile=args.compile, warmup_epochs=1, milestones=[])
    probe = Trainer(make_config("cifar10", "seed", out=str(out / "probe"), epochs=1, **base), progress=False, data=data)
    start = time.perf_counter()
    probe.train_epoch()
    first = time.perf_counter() - start
    start = time.perf_counter()
    probe.train_epoch()
    epoch_s = time.perf_counter() - start
    epochs = max(1, min(args.max_epochs, math.floor(minutes * 60 / (epoch_s * 1.05))))
    print(f"epoch time: {epoch_s:.2f} s (first epoch {first:.2f} s with warm-up); "
          f"{probe.steps_per_epoch * probe.global_batch / epoch_s:.0f} images/s; training {epochs} epochs")
    trainer = Trainer(make_config("cifar10", "seed", out=str(out / "run"), epochs=epochs,
                                  warmup_epochs=min(10, max(1, epochs // 10)),
                                  **{k: v for k, v in base.items() if k != "warmup_epochs"}),
                      progress=False, data=data)
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
    for name, m in (("self-classifier head", metrics), ("k-means on pixels", baseline)):
        print(f"{name:<22} NMI {m['nmi']:.4f}  AMI {m['ami']:.4f}  ARI {m['ari']:.4f}  ACC {m['acc']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="pre-training time box")
    parser.add_argument("--dataset", default="synthetic", help="synthetic, or an sclib data set under --data-root")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--mlp-hidden", type=int, default=4096)
    parser.add_argument("--max-epochs", type=int, default=800)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long CPU run of every step (for CI)")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.backbone, args.image_size, args.batch_size, args.mlp_hidden = "cpu", "small", 8, 32, 64
        args.minutes, args.max_epochs = 0.05, 1
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    print(f"torch {torch.__version__}; device: {torch.cuda.get_device_name() if cuda else 'cpu'}", flush=True)
    if not args.skip_throughput:
        if args.tiny:
            throughput.report("cpu", batch=8, steps=1, warmup=0, workers=0, settings=["mnist"])
        else:
            throughput.report(device, batch=512 if cuda else 64, steps=30 if cuda else 3, warmup=5 if cuda else 1,
                              workers=8, settings=["cifar", "mnist"])
    if args.dataset == "synthetic":
        data = synthetic_cifar(128, 64, size=args.image_size) if args.tiny else synthetic_cifar(50_000, 10_000)
    else:
        data = load_dataset(args.dataset, args.data_root)
    with tempfile.TemporaryDirectory() as tmp:
        pretrain_boxed(data, args.minutes, args, Path(tmp))


if __name__ == "__main__":
    main()
