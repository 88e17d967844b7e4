"""Image data sets as whole-split uint8 tensors.

Every supported set is small enough to hold in memory, so each split is read once into a
contiguous uint8 tensor [N, C, H, W] with int64 labels; augmentation then runs batched on the
device instead of in per-sample data-loader workers.

Design choice for the standard sets (MNIST, Fashion-MNIST, CIFAR-10/100, STL-10): torchvision is
used only to *download* them (its downloads verify the archive checksums). The files on disk are
then read by the small readers below, which follow the published file formats (IDX, the CIFAR
python pickles, the STL-10 binaries). Torchvision's own loaders refuse any file whose md5 differs
from the official one, which would make it impossible to test this code on tiny files in the real
formats; reading the formats directly keeps one code path for real files and test files, and lets
us check for missing files first and raise one clear DataError instead of torchvision's generic
"Dataset not found or corrupted".

CIFAR files are python pickles (that is the official format), so, as with torchvision, only load
CIFAR files from a trusted source.

The package: ``common`` (the split types, hold-out, data root, shared checks), ``formats`` (digits,
IDX, CIFAR and STL-10 readers), ``folder`` (image folders), and here one registry record per
data set with ``load_dataset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sclib.data.common import (
    DATA_ROOT_ENV,
    DEFAULT_DATA_ROOT,
    DataError,
    DatasetInfo,
    DataSplits,
    _resolve_root,
    _torchvision,
    channel_stats,
    counts_line,
    hold_out,
    resolve_data_root,
    split_counts,
)
from sclib.data.folder import IMAGE_EXTENSIONS, FolderSummary, _load_image_folder, summarize_image_folder
from sclib.data.formats import (
    _STL10_SIZE,
    CIFAR10_CLASSES,
    CIFAR20_CLASSES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR_ENV,
    MNIST_CLASSES,
    STL10_CLASSES,
    _fashion_system_dir,
    _load_cifar10,
    _load_cifar20,
    _load_digits,
    _load_idx,
    _load_stl10,
    read_idx,
)


def load_dataset(
    name: str,
    data_root: str | Path | None = None,
    download: bool = False,
    unlabelled: bool = False,
    image_size: int | None = None,
) -> DataSplits:
    """Load a train and an eval split into memory.

    `image_size` only applies to `imagefolder` (whose images may come in any size); the fixed-size
    sets are returned at their native size because resizing is the augmenter's job. `unlabelled`
    only applies to `stl10`. `data_root` defaults to $SCLIB_DATA, else ./data.
    `info.mean`/`info.std` are computed exactly from the loaded train split, so normalisation
    always matches the pixels actually used (for the real files they equal the published values).
    """
    key = _canonical_name(name)
    root = _resolve_root(data_root, must_exist=key == "imagefolder")
    return REGISTRY[key].load(LoadRequest(root, download, unlabelled, image_size))


@dataclass(frozen=True)
class LoadRequest:
    """What a loader may need; each reads only its own part."""

    root: Path
    download: bool = False
    unlabelled: bool = False
    image_size: int | None = None


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"Unknown data set {name!r}. Choose one of: {', '.join(DATASETS)}.")
    return key


@dataclass(frozen=True)
class DatasetRecord:
    """Everything known about one data set before its files are read, as torchvision's and
    solo-learn's registries keep it together.

    ``classes``, ``channels`` and ``native_size`` are empty for an image folder (read from it).
    ``mean``/``std`` are the published per-channel statistics over the official training split
    in [0, 1] pixel units (population std), empty where there are none; a loaded split carries
    the exact values of its own pixels, which equal these for the real files.
    """

    name: str
    label: str
    load: Callable[[LoadRequest], DataSplits]
    classes: tuple[str, ...] = ()
    channels: int | None = None
    native_size: int | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    download: Callable[[Path], object] | None = None
    bundled: bool = False  # shipped with a library (scikit-learn's digits): reads no data root


REGISTRY: dict[str, DatasetRecord] = {r.name: r for r in (
    DatasetRecord("digits", "digits", lambda r: _load_digits(), MNIST_CLASSES, 1, 8, bundled=True),
    DatasetRecord("mnist", "MNIST", lambda r: _load_idx("mnist", r.root, r.download, "MNIST"),
                  MNIST_CLASSES, 1, 28, (0.1307,), (0.3081,), _torchvision("MNIST", train=False)),
    DatasetRecord("fashion_mnist", "Fashion-MNIST",
                  lambda r: _load_idx("fashion_mnist", r.root, r.download, "FashionMNIST", _fashion_system_dir(),
                                      "where Debian's package dataset-fashion-mnist installs them; "
                                      f"${FASHION_MNIST_DIR_ENV} overrides that folder"),
                  FASHION_MNIST_CLASSES, 1, 28, (0.2860,), (0.3530,), _torchvision("FashionMNIST", train=False)),
    DatasetRecord("cifar10", "CIFAR-10", lambda r: _load_cifar10(r.root, r.download), CIFAR10_CLASSES, 3, 32,
                  (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _torchvision("CIFAR10", train=False)),
    DatasetRecord("cifar20", "CIFAR-20", lambda r: _load_cifar20(r.root, r.download), CIFAR20_CLASSES, 3, 32,
                  (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), _torchvision("CIFAR100", train=False)),
    DatasetRecord("stl10", "STL-10", lambda r: _load_stl10(r.root, r.download, r.unlabelled), STL10_CLASSES, 3,
                  _STL10_SIZE, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713),
                  _torchvision("STL10", split="test")),
    DatasetRecord("imagefolder", "image folder", lambda r: _load_image_folder(r.root, r.image_size)),
)}


DATASETS: tuple[str, ...] = tuple(REGISTRY)

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "IMAGE_EXTENSIONS",
    "REGISTRY",
    "DataError",
    "DataSplits",
    "DatasetInfo",
    "DatasetRecord",
    "FolderSummary",
    "LoadRequest",
    "channel_stats",
    "counts_line",
    "hold_out",
    "load_dataset",
    "read_idx",
    "resolve_data_root",
    "split_counts",
    "summarize_image_folder",
]
