"""Writers for tiny files in the real on-disk formats of the standard data sets.

Each writer follows the published format description, not sclib's readers, so the loader tests
check sclib against the formats themselves.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# CIFAR-100 superclasses with their fine classes, as listed on the CIFAR-100 page.
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_FINE_NAMES = sorted(n for names in CIFAR100_SUPERCLASSES.values() for n in names)
CIFAR100_COARSE_NAMES = list(CIFAR100_SUPERCLASSES)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def coarse_of_fine(fine_index: int) -> int:
    name = CIFAR100_FINE_NAMES[fine_index]
    return next(i for i, (_, names) in enumerate(CIFAR100_SUPERCLASSES.items()) if name in names)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type code 0x08 (ubyte), ndim, big-endian int32 dims, then the data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes(order="C")


def write_mnist(folder: Path, train_x, train_y, test_x, test_y, gz: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, arr in zip(MNIST_NAMES, (train_x, train_y, test_x, test_y)):
        data = idx_bytes(np.asarray(arr, dtype=np.uint8))
        path = folder / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, train_flat: list[np.ndarray], train_labels: list[list[int]],
                  test_flat: np.ndarray, test_labels: list[int]) -> Path:
    """`*_flat` rows are 3072 bytes: the 1024 red values, then green, then blue, each row-major."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, (x, y) in enumerate(zip(train_flat, train_labels), start=1):
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": list(y), "data": x})
    _dump(folder / "test_batch",
          {"batch_label": "testing batch 1 of 1", "labels": list(test_labels), "data": test_flat})
    _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072})
    return folder


def write_cifar100(root: Path, train_flat: np.ndarray, train_fine: list[int], test_flat: np.ndarray,
                   test_fine: list[int], coarse_fn=coarse_of_fine) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, x, fine in (("train", train_flat, train_fine), ("test", test_flat, test_fine)):
        _dump(folder / name, {"filenames": [f"img{i}.png" for i in range(len(fine))], "batch_label": name,
                              "fine_labels": list(fine), "coarse_labels": [coarse_fn(f) for f in fine], "data": x})
    _dump(folder / "meta", {"fine_label_names": CIFAR100_FINE_NAMES, "coarse_label_names": CIFAR100_COARSE_NAMES})
    return folder


def write_stl10(root: Path, train_flat: np.ndarray, train_labels_1based: list[int], test_flat: np.ndarray,
                test_labels_1based: list[int], unlabeled_flat: np.ndarray | None) -> Path:
    """`*_flat` rows are 27648 bytes: per channel, the 96x96 plane stored column by column."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "train_X.bin").write_bytes(np.asarray(train_flat, dtype=np.uint8).tobytes())
    (folder / "train_y.bin").write_bytes(bytes(train_labels_1based))
    (folder / "test_X.bin").write_bytes(np.asarray(test_flat, dtype=np.uint8).tobytes())
    (folder / "test_y.bin").write_bytes(bytes(test_labels_1based))
    if unlabeled_flat is not None:
        (folder / "unlabeled_X.bin").write_bytes(np.asarray(unlabeled_flat, dtype=np.uint8).tobytes())
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return folder
