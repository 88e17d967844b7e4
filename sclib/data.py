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
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA_ROOT_ENV = "SCLIB_DATA"
DEFAULT_DATA_ROOT = "data"  # relative to the current working directory
FASHION_MNIST_DIR_ENV = "SCLIB_FASHION_MNIST_DIR"
# Where Debian's package `dataset-fashion-mnist` installs the gzipped IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

DIGITS_SPLIT_SEED = 0
DIGITS_EVAL_FRACTION = 0.3

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR20_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

# CIFAR-100 fine label index (alphabetical fine names, as in the official `meta` file) -> superclass
# index into CIFAR20_CLASSES. This is the map defined by the CIFAR-100 release.
CIFAR100_FINE_TO_COARSE: list[int] = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]

_MNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR100_DIR = "cifar-100-python"
_STL10_DIR = "stl10_binary"
_STL10_SIZE = 96


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


# ----------------------------------------------------------------------------------------------
# public API


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


# ----------------------------------------------------------------------------------------------
# shared helpers


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"Unknown data set {name!r}. Choose one of: {', '.join(DATASETS)}.")
    return key


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


# ----------------------------------------------------------------------------------------------
# digits (scikit-learn's bundled copy: works offline)


def _load_digits() -> DataSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # pixel values are integers 0..16; map 16 -> 255 so every set shares the uint8 0..255 range
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train_idx, eval_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_EVAL_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    train_idx, eval_idx = np.sort(train_idx), np.sort(eval_idx)
    return _make_splits(
        "digits", MNIST_CLASSES, images[train_idx], labels[train_idx], images[eval_idx], labels[eval_idx]
    )


# ----------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw, or gzipped: detected from the content, not the name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read IDX file {path}: {exc}. Delete it and download again.") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}). Delete it and download again.")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header cut short). Delete it and download again.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} has {len(raw)} bytes but its header (shape {shape}) implies {expected}; "
            "the file is truncated or corrupt. Delete it and download again."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx_files(folder: Path) -> list[Path] | None:
    """The four MNIST-layout files in `folder`, each raw or .gz; None unless all four are there."""
    found = []
    for stem in _MNIST_FILES:
        hit = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def _fashion_system_dir() -> Path:
    env = os.environ.get(FASHION_MNIST_DIR_ENV)
    return Path(env) if env else FASHION_MNIST_SYSTEM_DIR


def _load_idx(name: str, root: Path, download: bool, raw_folder: str, system_dir: Path | None = None,
              system_note: str = "") -> DataSplits:
    """An MNIST-layout set: torchvision's ``root/<raw_folder>/raw``, else a system folder of the files."""
    record = REGISTRY[name]
    raw_dir = root / raw_folder / "raw"
    candidates = [raw_dir] + ([system_dir] if system_dir else [])
    files = next((f for f in map(_find_idx_files, candidates) if f is not None), None)
    if files is None and download:
        _torchvision_download(name, root)
        files = _find_idx_files(raw_dir)
    if files is None:
        also = f"; also looked in {system_dir}, {system_note}" if system_dir else ""
        raise _missing_error(record.label, [raw_dir / f for f in _MNIST_FILES], f"(raw or .gz{also})\n")
    train_x, train_y, eval_x, eval_y = (read_idx(p) for p in files)
    for images, path in ((train_x, files[0]), (eval_x, files[2])):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{path} should hold uint8 images [N, H, W], found {images.dtype} {images.shape}.")
    for labels, path in ((train_y, files[1]), (eval_y, files[3])):
        if labels.ndim != 1:
            raise DataError(f"{path} should hold a 1-D label vector, found shape {labels.shape}.")
        _check_labels(labels.astype(np.int64), 10, path)
    _check_count(train_x, train_y, files[0], files[1])
    _check_count(eval_x, eval_y, files[2], files[3])
    return _make_splits(name, record.classes, train_x[:, None], train_y, eval_x[:, None], eval_y)


# ----------------------------------------------------------------------------------------------
# CIFAR (python pickles: 'data' is uint8 [N, 3072] = R plane, G plane, B plane, each row-major 32x32)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR files' dicts, lists and numpy arrays and nothing else.

    A plain ``pickle.load`` runs whatever callable a file names; a data file must never be
    able to execute code, so every global except numpy's array reconstruction is refused.
    """

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: CIFAR files hold only arrays and lists")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"Cannot read CIFAR pickle {path}: {exc}. Delete it and download again.") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR dictionary. Delete it and download again.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_field(batch: dict, key: str, path: Path):
    if key not in batch:
        raise DataError(f"{path} lacks the key {key!r}; it is not a CIFAR file of the expected kind.")
    return batch[key]


def _cifar_images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(_cifar_field(batch, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' should be uint8 [N, 3072], found {data.dtype} {data.shape}.")
    return data.reshape(-1, 3, 32, 32)


def _require_files(what: str, paths: Sequence[Path], root: Path, download: bool, name: str) -> None:
    if all(p.is_file() for p in paths):
        return
    if download:
        _torchvision_download(name, root)
        if all(p.is_file() for p in paths):
            return
    missing = [p for p in paths if not p.is_file()]
    raise _missing_error(what, paths, f"(missing: {', '.join(p.name for p in missing)})\n")


def _read_cifar_split(paths: Sequence[Path], label_key: str, n_classes: int):
    images, labels = [], []
    for path in paths:
        batch = _read_pickle(path)
        x = _cifar_images(batch, path)
        y = np.asarray(_cifar_field(batch, label_key, path), dtype=np.int64)
        _check_count(x, y, path, path)
        _check_labels(y, n_classes, path)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _load_cifar10(root: Path, download: bool) -> DataSplits:
    folder = root / _CIFAR10_DIR
    train_paths = [folder / f for f in _CIFAR10_TRAIN]
    test_path, meta_path = folder / "test_batch", folder / "batches.meta"
    _require_files("CIFAR-10", [*train_paths, test_path, meta_path], root, download, "cifar10")
    classes = tuple(_cifar_field(_read_pickle(meta_path), "label_names", meta_path))
    train_x, train_y = _read_cifar_split(train_paths, "labels", len(classes))
    eval_x, eval_y = _read_cifar_split([test_path], "labels", len(classes))
    return _make_splits("cifar10", classes, train_x, train_y, eval_x, eval_y)


def _load_cifar20(root: Path, download: bool) -> DataSplits:
    """CIFAR-100 images labelled by their 20 superclasses (the pickles' 'coarse_labels')."""
    folder = root / _CIFAR100_DIR
    train_path, test_path, meta_path = folder / "train", folder / "test", folder / "meta"
    _require_files("CIFAR-100 (for cifar20)", [train_path, test_path, meta_path], root, download, "cifar20")
    classes = tuple(_cifar_field(_read_pickle(meta_path), "coarse_label_names", meta_path))
    if len(classes) != 20:
        raise DataError(f"{meta_path} lists {len(classes)} coarse label names, expected the 20 CIFAR-100 superclasses.")
    splits = []
    for path in (train_path, test_path):
        batch = _read_pickle(path)
        x = _cifar_images(batch, path)
        coarse = np.asarray(_cifar_field(batch, "coarse_labels", path), dtype=np.int64)
        fine = np.asarray(_cifar_field(batch, "fine_labels", path), dtype=np.int64)
        _check_count(x, coarse, path, path)
        _check_labels(coarse, 20, path)
        _check_labels(fine, 100, path)
        if len(fine) != len(coarse) or np.any(np.asarray(CIFAR100_FINE_TO_COARSE)[fine] != coarse):
            raise DataError(
                f"{path}: 'coarse_labels' disagree with the standard CIFAR-100 fine->superclass map; "
                "the file is corrupt or not CIFAR-100. Delete it and download again."
            )
        splits.append((x, coarse))
    return _make_splits("cifar20", classes, *splits[0], *splits[1])


# ----------------------------------------------------------------------------------------------
# STL-10 (binaries: per image 3 planes of 96x96 bytes, each plane stored column-major)


def _read_stl_images(path: Path, chunk: int = 2048) -> torch.Tensor:
    per_image = 3 * _STL10_SIZE * _STL10_SIZE
    size = path.stat().st_size
    if size % per_image:
        raise DataError(f"{path} has {size} bytes, not a whole number of 3x96x96 images; it is truncated. "
                        "Delete it and download again.")
    n = size // per_image
    out = torch.empty((n, 3, _STL10_SIZE, _STL10_SIZE), dtype=torch.uint8)
    if n == 0:
        return out
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, _STL10_SIZE, _STL10_SIZE))
    dest = out.numpy()
    for start in range(0, n, chunk):  # the 100k unlabelled split is 2.8 GB: avoid a second full copy
        dest[start:start + chunk] = raw[start:start + chunk].transpose(0, 1, 3, 2)
    del raw
    return out


def _read_stl_labels(path: Path) -> np.ndarray:
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path} holds labels outside 1..10 (found {labels.min()}..{labels.max()}); "
                        "it is corrupt. Delete it and download again.")
    return labels - 1


def _load_stl10(root: Path, download: bool, unlabelled: bool) -> DataSplits:
    folder = root / _STL10_DIR
    names = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"] + (["unlabeled_X.bin"] if unlabelled else [])
    paths = [folder / n for n in names]
    _require_files("STL-10", paths, root, download, "stl10")
    train_x, eval_x = _read_stl_images(paths[0]), _read_stl_images(paths[2])
    train_y, eval_y = _read_stl_labels(paths[1]), _read_stl_labels(paths[3])
    _check_count(train_x, train_y, paths[0], paths[1])
    _check_count(eval_x, eval_y, paths[2], paths[3])
    extra = _read_stl_images(paths[4]) if unlabelled else None
    class_file = folder / "class_names.txt"
    classes = STL10_CLASSES
    if class_file.is_file():
        listed = tuple(line.strip() for line in class_file.read_text().splitlines() if line.strip())
        classes = listed if len(listed) == 10 else classes
    return _make_splits("stl10", classes, train_x, train_y, eval_x, eval_y, extra)


# ----------------------------------------------------------------------------------------------
# ImageFolder (data_root/train/<class>/*, data_root/test/<class>/*)


def _scan_split(split_dir: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise DataError(
            f"Image folder split {split_dir} does not exist. Expected the layout "
            f"<data_root>/train/<class>/<image> and <data_root>/test/<class>/<image>."
        )
    found: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(_walk_images(class_dir, frozenset({split_dir.resolve()})))
        if not files:
            raise DataError(f"Class folder {class_dir} holds no images (extensions: {', '.join(IMAGE_EXTENSIONS)}). "
                            "Add images or remove the folder.")
        found[class_dir.name] = files
    return found


def _walk_images(folder: Path, ancestors: frozenset[Path]) -> Iterator[Path]:
    """Every image file under ``folder``, at any depth: one rule for the whole tree.

    Hidden entries (``.ipynb_checkpoints``, ``.DS_Store``, ``._x.png``) are skipped at every depth,
    since tools leave them anywhere. Linked folders and files are followed, as torchvision's
    ImageFolder does (``os.walk(followlinks=True)``), except a folder whose real path is one of
    its own ancestors' (a link loop), which would otherwise never end.
    """
    real = folder.resolve()
    if real in ancestors:
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk_images(entry, ancestors | {real})
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            yield entry


def _open_image(path: Path, decode: bool = True):
    """An opened image; ``decode=False`` reads only its header (size and mode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        if decode:
            img.load()
    except Image.DecompressionBombError as exc:  # Pillow's guard: more than 2 x MAX_IMAGE_PIXELS pixels
        raise DataError(f"Cannot read image {path}: Pillow refuses it as a possible decompression bomb ({exc}). "
                        "Shrink it (this study resizes every image to --image-size anyway) or remove it.") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from exc
    return img


# How each Pillow mode that an accepted file can open in becomes 8 bits a channel. Pillow's own
# convert() clips rather than scales wide modes (a 16-bit grey PNG becomes black and white), so
# 16-bit grey is divided by 257 (65535 -> 255) here; modes without a fixed range are refused.
GREY_MODES = ("1", "L", "LA", "La")
GREY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB")
# Mode "I" (32-bit integers) is how Pillow opens 16-bit PGM/PPM files (scaled to 0..65535 from
# their maxval) and older Pillows 16-bit PNGs; from any other format its range is unknown.
SIXTEEN_BIT_I_FORMATS = ("PNG", "PPM")


def pixel_mode(img, path: Path) -> str:
    """"L" or "RGB": what an opened image becomes, read from its header; DataError if neither.

    Raises DataError naming the file and the mode for modes with no fixed range (floats,
    32-bit integers), which no scaling could map onto 8 bits without guessing.
    """
    if img.mode in GREY_MODES or img.mode in GREY_16BIT_MODES:
        return "L"
    if img.mode == "I" and img.format in SIXTEEN_BIT_I_FORMATS:
        return "L"
    if img.mode in COLOUR_MODES:
        return "RGB"
    raise DataError(f"Cannot use image {path}: its pixel mode {img.mode!r} ({img.format}) has no fixed range to "
                    "scale to 8 bits; save it as 8- or 16-bit grayscale or 8-bit RGB.")


def folder_channels(modes: Sequence[str]) -> int:
    """1 when every image of a folder is grayscale, else 3: the recipe and the loader both ask this."""
    return 1 if all(m == "L" for m in modes) else 3


def _as_8bit(img, path: Path, mode: str):
    """The image in ``mode`` ("L" or "RGB") with its full range scaled to 0..255."""
    from PIL import Image

    if img.mode in GREY_16BIT_MODES or img.mode == "I":
        wide = np.asarray(img, dtype=np.float64)
        if wide.min() < 0 or wide.max() > 65535:
            raise DataError(f"Cannot use image {path}: its mode {img.mode!r} holds values outside 0..65535, "
                            "so it is not 16-bit grayscale; save it as 8- or 16-bit grayscale.")
        img = Image.fromarray(np.rint(wide / 257.0).astype(np.uint8), "L")
    elif img.mode == "La":
        img = img.convert("LA")  # Pillow converts premultiplied grey only to LA
    return img.convert(mode)


@dataclass(frozen=True)
class FolderSummary:
    """What a recipe can know about an image folder without decoding every image."""

    classes: tuple[str, ...]
    train_images: int
    test_images: int
    channels: int       # 1 when every image (train and test) is grayscale, as the loader decides
    native_size: int    # the median longer side of the sampled images, in pixels
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images found


def summarize_image_folder(data_root: str | Path, sample: int = 64) -> FolderSummary:
    """Count an ImageFolder's images, read every image's mode and the size of an evenly spread sample.

    Every header is read (not only a sample's) because one colour image anywhere makes the
    loader load the whole folder in colour, and the recipe must record what is loaded.
    """
    root = _resolve_root(data_root, must_exist=True)
    train, test = _scan_split(root / "train"), _scan_split(root / "test")
    classes = _check_folder_classes(root, train, test)
    files = [p for paths in train.values() for p in paths]
    every = files + [p for paths in test.values() for p in paths]
    picked = set(files[:: max(1, len(files) // sample)][:sample])
    sizes, modes = [], []
    for path in every:
        img = _open_image(path, decode=False)
        modes.append(pixel_mode(img, path))
        if path in picked:
            sizes.append(max(img.size))
    counts = {split: {c: len(paths) for c, paths in found.items()}
              for split, found in (("train", train), ("test", test))}
    return FolderSummary(classes, len(files), len(every) - len(files), folder_channels(modes), int(np.median(sizes)),
                         counts)


def _load_image_folder(root: Path, image_size: int | None) -> DataSplits:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}.")
    train, test = _scan_split(root / "train"), _scan_split(root / "test")
    classes = _check_folder_classes(root, train, test)
    labelled = {
        split: [(path, classes.index(c)) for c, paths in found.items() for path in paths]
        for split, found in (("train", train), ("test", test))
    }
    images = {split: [(path, _open_image(path)) for path, _ in items] for split, items in labelled.items()}
    every = [pair for pairs in images.values() for pair in pairs]
    mode = "L" if folder_channels([pixel_mode(im, path) for path, im in every]) == 1 else "RGB"
    size = image_size or _common_square_size(every)
    arrays = {split: _to_array(pairs, mode, size) for split, pairs in images.items()}
    labels = {split: [y for _, y in items] for split, items in labelled.items()}
    return _make_splits("imagefolder", classes, arrays["train"], labels["train"], arrays["test"], labels["test"])


def _check_folder_classes(root: Path, train: dict, test: dict) -> tuple[str, ...]:
    layout = "Expected <data_root>/train/<class>/<image> and <data_root>/test/<class>/<image>."
    classes = tuple(train)  # folder names, sorted by _scan_split
    if not classes:
        raise DataError(f"No class folders with images under {root / 'train'}. {layout}")
    if len(classes) < 2:
        raise DataError(f"Only one class ({classes[0]!r}) under {root / 'train'}; "
                        "clustering needs at least two classes.")
    if not test:
        raise DataError(f"No class folders with images under {root / 'test'}. {layout}")
    unknown = sorted(set(test) - set(classes))
    if unknown:
        raise DataError(f"Test classes {unknown} under {root / 'test'} have no folder under {root / 'train'}; "
                        "train and test must use the same class folders.")
    return classes


def _common_square_size(images: list) -> int:
    sizes: dict[tuple[int, int], Path] = {}
    for path, im in images:
        sizes.setdefault(im.size, path)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataError(f"Images differ in size ({p1}: {s1[0]}x{s1[1]}, {p2}: {s2[0]}x{s2[1]}). "
                        "Pass image_size (CLI --image-size) to resize all images to one square size.")
    (w, h), path = next(iter(sizes.items()))
    if w != h:
        raise DataError(f"Images are {w}x{h}, not square (e.g. {path}). Pass image_size to resize them to a square.")
    return w


def _to_array(images: list, mode: str, size: int) -> np.ndarray:
    """``(path, image)`` pairs as uint8 [N, C, size, size], every image in ``mode`` at full range."""
    from PIL import Image

    channels = 1 if mode == "L" else 3
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, (path, im) in enumerate(images):
        im = _as_8bit(im, path, mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out


# ----------------------------------------------------------------------------------------------
# the registry: one record per data set, in the order the study lists them


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
