"""The seed report's numbers as data, so every comparison quotes them from one place.

Values are percent, exactly as printed in the seed report (ResNet-18; Table 1 after 800
epochs, Table 2 ablations on STL-10 after 300 epochs each). Code elsewhere keeps fractions:
use :func:`as_fractions` before handing a row to ``sclib.report.plots``.
"""

from __future__ import annotations

from collections.abc import Mapping

METRICS = ("nmi", "ami", "ari", "acc")

SOURCE = "seed report, ResNet-18"

# Table 1: unsupervised clustering, ResNet-18, 800 epochs (percent).
TABLE1: dict[str, dict[str, float]] = {
    "mnist": {"nmi": 83.9427, "ami": 83.9140, "ari": 76.8142, "acc": 81.9000},
    "cifar10": {"nmi": 50.9317, "ami": 50.8450, "ari": 41.5156, "acc": 60.7300},
    "cifar20": {"nmi": 30.9210, "ami": 30.4974, "ari": 17.8501, "acc": 32.2400},
    "stl10": {"nmi": 42.5199, "ami": 42.3921, "ari": 31.6741, "acc": 51.8125},
}
TABLE1_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar20": "CIFAR-20", "stl10": "STL-10"}
TABLE1_EPOCHS = 800

# Table 2: ablations on STL-10, 300 epochs each (percent), in the report's order.
# Base: batch 512, heads [10, 20, 40, 80], temperatures (row 0.10, column 0.05).
TABLE2_DATASET = "stl10"
TABLE2_EPOCHS = 300
TABLE2: dict[str, dict[str, float]] = {
    "batch 128": {"nmi": 39.0715, "ami": 38.9363, "ari": 27.6416, "acc": 48.8500},
    "batch 256": {"nmi": 41.0984, "ami": 40.9675, "ari": 27.3900, "acc": 46.4750},
    "batch 1024": {"nmi": 39.6265, "ami": 39.4921, "ari": 26.2468, "acc": 45.2375},
    "heads 1 x 10": {"nmi": 39.8843, "ami": 39.7506, "ari": 27.4368, "acc": 48.7750},
    "heads 5 x 10": {"nmi": 38.2264, "ami": 38.0888, "ari": 26.1061, "acc": 47.3250},
    "heads 10 x 10": {"nmi": 38.8565, "ami": 38.7202, "ari": 25.2499, "acc": 44.5375},
    "heads 15 x 10": {"nmi": 39.9663, "ami": 39.8326, "ari": 25.9415, "acc": 44.0750},
    "temperatures (0.07, 0.03)": {"nmi": 40.8495, "ami": 40.7174, "ari": 28.4016, "acc": 48.4375},
    "temperatures (0.07, 0.05)": {"nmi": 42.5199, "ami": 42.3921, "ari": 31.6741, "acc": 51.8125},
    "temperatures (0.10, 0.03)": {"nmi": 40.6805, "ami": 40.5485, "ari": 27.7525, "acc": 45.7875},
    "base with multi-crop": {"nmi": 40.5333, "ami": 40.4014, "ari": 25.5025, "acc": 45.0875},
    "base": {"nmi": 40.3517, "ami": 40.2191, "ari": 29.2059, "acc": 50.3375},
}

# Where Table 2 ran, as tables and pages name it ("STL-10").
TABLE2_NAME = TABLE1_NAMES[TABLE2_DATASET]

# Data sets without a Table 1 row are compared with the nearest one, and the report says so.
NEAREST_ROW = {"digits": "mnist", "fashion_mnist": "mnist"}


def table1_row(dataset: str) -> tuple[str, dict[str, float]] | None:
    """The seed's Table 1 row for a data set (label, percent values), or the nearest stand-in.

    digits and Fashion-MNIST have no row of their own; MNIST is the closest (grey 10-class
    digits / clothing at small resolution), labelled as a stand-in so nobody reads it as a
    like-for-like number. ImageFolder data sets have no comparison at all (None).
    """
    if dataset in TABLE1:
        return f"{SOURCE}, {TABLE1_EPOCHS} epochs: {TABLE1_NAMES[dataset]}", dict(TABLE1[dataset])
    nearest = NEAREST_ROW.get(dataset)
    if nearest is None:
        return None
    return (f"{SOURCE}, {TABLE1_EPOCHS} epochs: {TABLE1_NAMES[nearest]} (stand-in, no {dataset} row)",
            dict(TABLE1[nearest]))


def as_fractions(row: Mapping[str, float]) -> dict[str, float]:
    """Percent -> fractions, the unit ``sclib.core.metrics`` and ``sclib.report.plots`` use."""
    return {k: float(v) / 100.0 for k, v in row.items()}
