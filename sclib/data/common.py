"""What every reader shares: the split types, the data root, the hold-out validation split, and
the checks and messages for missing or damaged files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA_ROOT_ENV = "SCLIB_DATA"


DEFAULT_DATA_ROOT = "data"  # relative to the current working directory


class DataError(ValueError):
    """A data set could not be found or read; the message says what and how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What downstream code needs to build a model and normalise inputs, without the pixels."""

    name: str
    classes: tuple[str, ...]
    channels: int
    native_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class DataSplits:
    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    unlabelled_images: torch.Tensor | None = None


def hold_out(splits: DataSplits, fraction: float, seed: int = 0) -> DataSplits:
    """Train on part of the train split and evaluate on the rest: a validation split for tuning.

    The cut is a fixed random permutation (``seed``, not the run's seed), so every seed and
    variant of a tuning sweep is scored on the same images and the test split stays unseen.
    """
    if not 0 < fraction < 1:
        raise DataError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    n = len(splits.train_images)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(fraction * n))
    if held >= n:
        raise DataError(f"a validation fraction of {fraction} leaves no training images out of {n}")
    keep, val = order[held:].sort().values, order[:held].sort().values
    return DataSplits(splits.info, splits.train_images[keep], splits.train_labels[keep],
                      splits.train_images[val], splits.train_labels[val], splits.unlabelled_images)


def split_counts(splits: DataSplits) -> dict[str, dict[str, int]]:
    """Images per split ("train", "eval") and class name, as loaded (after any hold-out)."""
    names = splits.info.classes
    return {split: {names[c]: int(n) for c, n in enumerate(np.bincount(labels.numpy(), minlength=len(names)))}
            for split, labels in (("train", splits.train_labels), ("eval", splits.eval_labels))}


def counts_line(counts: dict[str, dict[str, int]]) -> str:
    """``split_counts`` as one line for a log: each split's total, then its images per class."""
    return "; ".join(f"{split} {sum(per.values())} images ("
                     + ", ".join(f"{name} {n}" for name, n in per.items()) + ")" for split, per in counts.items())


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The root actually used: the argument, else $SCLIB_DATA, else ./data (relative to cwd).

    A relative result is relative to the working directory of the process that reads it: code
    that hands the root to another working directory (the study's notebooks run inside the study
    folder) resolves it first, as ``study`` does.
    """
    if data_root is not None:
        return Path(data_root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path(DEFAULT_DATA_ROOT)


def _resolve_root(data_root: str | Path | None, must_exist: bool) -> Path:
    root = resolve_data_root(data_root)
    if root.exists() and not root.is_dir():
        raise DataError(
            f"data_root {str(root)!r} is a file, not a directory. Pass the folder that holds the data sets."
        )
    if must_exist and not root.is_dir():
        raise DataError(f"data_root {str(root)!r} does not exist. Pass an existing folder.")
    return root


def _missing_error(what: str, expected: Sequence[Path], extra: str = "") -> DataError:
    listing = "\n".join(f"  {p}" for p in expected)
    return DataError(
        f"{what} not found. Expected these files:\n{listing}\n{extra}"
        "Pass download=True (CLI --download) to fetch them, or place the files there."
    )


def channel_stats(images: torch.Tensor, chunk_elems: int = 1 << 24) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std in [0,1] units; chunked so big splits need no float copy."""
    n, c = images.shape[:2]
    per_image = max(1, images[0].numel()) if n else 1
    step = max(1, chunk_elems // per_image)
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, step):
        x = images[start:start + step].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _make_splits(name: str, classes: Sequence[str], train_x: np.ndarray | torch.Tensor, train_y,
                 eval_x: np.ndarray | torch.Tensor, eval_y, unlabelled: torch.Tensor | None = None) -> DataSplits:
    tx, ex = _as_uint8_tensor(train_x), _as_uint8_tensor(eval_x)
    ty = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    ey = torch.as_tensor(np.asarray(eval_y, dtype=np.int64))
    mean, std = channel_stats(tx)
    info = DatasetInfo(name, tuple(classes), int(tx.shape[1]), int(tx.shape[2]), mean, std)
    return DataSplits(info, tx, ty, ex, ey, unlabelled)


def _as_uint8_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.contiguous()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8))


def _check_labels(labels: np.ndarray, n_classes: int, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{path} holds labels outside 0..{n_classes - 1} (found {labels.min()}..{labels.max()}); "
            "the file is corrupt or from another data set. Delete it and download again."
        )


def _check_count(images: np.ndarray | torch.Tensor, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "one of the files is truncated or they belong to different splits. Delete them and download again."
        )


def _torchvision_download(name: str, root: Path) -> None:
    """Fetch a standard set with torchvision (which verifies the archive's md5)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        from sclib.data import REGISTRY  # the package's registry, complete once it is imported

        REGISTRY[name].download(root)
    except Exception as exc:  # network, checksum, disk: all end the same way for the user
        raise DataError(
            f"Downloading {name} into {root} failed: {exc}. Check the network connection and free disk space, "
            "or download the files by hand and place them there."
        ) from exc


def _torchvision(dataset: str, **split: Any) -> Callable[[Path], object]:
    """A download through ``torchvision.datasets.<dataset>`` into a root (its test split is enough:
    torchvision fetches the whole archive)."""
    def fetch(root: Path) -> object:
        from torchvision import datasets as tvd

        return getattr(tvd, dataset)(str(root), download=True, **split)
    return fetch
