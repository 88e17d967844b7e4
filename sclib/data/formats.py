"""Readers of the standard data sets' own files: scikit-learn's digits, IDX (MNIST, Fashion-MNIST),
CIFAR's python pickles and STL-10's binaries, each following the published format.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sclib.data.common import (
    DataError,
    DataSplits,
    _check_count,
    _check_labels,
    _make_splits,
    _missing_error,
    _torchvision_download,
)

FASHION_MNIST_DIR_ENV = "SCLIB_FASHION_MNIST_DIR"


# Where Debian's package `dataset-fashion-mnist` installs the gzipped IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


DIGITS_SPLIT_SEED = 0


DIGITS_EVAL_FRACTION = 0.3


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
    from sclib.data import REGISTRY  # the package's registry, complete once it is imported

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
