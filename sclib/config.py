"""One parameter vocabulary for the CLI, the notebooks' papermill parameters and config.json.

Every run is described by a single :class:`Config`. Presets are data (dicts of overrides per
data set), so the seed report's recipe and the tuned CPU recipe differ only in values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar20", "stl10", "imagefolder")
NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar20": 20, "stl10": 10}
BACKBONES = ("resnet18", "small")
OPTIMIZERS = ("sgd", "lars", "adamw")
DEVICES = ("auto", "cpu", "cuda")
AUGMENT_STYLES = ("byol", "affine")
PRESETS = ("fast", "seed")


class ConfigError(ValueError):
    """A parameter value that cannot describe a run; the message says which and how to fix it."""


@dataclass
class Config:
    """A pre-training run. Field names are the CLI flags (``--batch-size``) and papermill names."""

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    unlabelled: bool = False
    val_fraction: float = 0.0
    backbone: str = "small"
    small_width: int = 32
    image_size: int = 16
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.4
    start_lr: float = 0.01
    min_lr: float = 0.0004
    warmup_epochs: int = 3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: str = "sgd"
    heads: list[int] = field(default_factory=lambda: [10, 20, 40, 80])
    row_tau: float = 0.1
    col_tau: float = 0.05
    mlp_hidden: int = 1024
    mlp_out: int = 128
    augment: str = "affine"
    global_scale: list[float] = field(default_factory=lambda: [0.14, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    local_crops: int = 0
    local_size: int | None = None
    nn_queue: int = 0
    milestones: list[int] = field(default_factory=list)
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    sync_bn: bool = False
    seed: int = 0
    out: str = "runs/digits"

    def validate(self) -> "Config":
        """Fail at once, before any data is read, with one message per wrong value."""
        problems = list(_problems(self))
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def evaluated_head(self, num_classes: int) -> int:
        """Index of the head the study evaluates: the one whose size is the number of classes."""
        if num_classes in self.heads:
            return self.heads.index(num_classes)
        return 0


def _problems(cfg: Config):
    if cfg.dataset not in DATASETS:
        yield f"dataset {cfg.dataset!r} is unknown; choose one of {', '.join(DATASETS)}"
    if cfg.dataset == "imagefolder" and not cfg.data_root:
        yield "dataset 'imagefolder' needs data_root: a folder with train/<class>/* and test/<class>/*"
    if cfg.backbone not in BACKBONES:
        yield f"backbone {cfg.backbone!r} is unknown; choose one of {', '.join(BACKBONES)}"
    if cfg.optimizer not in OPTIMIZERS:
        yield f"optimizer {cfg.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}"
    if cfg.device not in DEVICES:
        yield f"device {cfg.device!r} is unknown; choose one of {', '.join(DEVICES)}"
    if cfg.augment not in AUGMENT_STYLES:
        yield f"augment {cfg.augment!r} is unknown; choose one of {', '.join(AUGMENT_STYLES)}"
    for name in ("epochs", "batch_size", "image_size", "mlp_hidden", "mlp_out", "small_width"):
        if getattr(cfg, name) <= 0:
            yield f"{name} must be a positive integer, got {getattr(cfg, name)}"
    if cfg.batch_size == 1:
        yield "batch_size must be at least 2: the loss normalises over the batch"
    for name in ("lr", "row_tau", "col_tau"):
        if not 0 < getattr(cfg, name) < math.inf:
            yield f"{name} must be positive and finite, got {getattr(cfg, name)}"
    for name in ("start_lr", "min_lr", "weight_decay", "momentum", "warmup_epochs", "local_crops", "nn_queue"):
        if not 0 <= getattr(cfg, name) < math.inf:
            yield f"{name} must not be negative or non-finite, got {getattr(cfg, name)}"
    if not cfg.heads:
        yield "heads must list at least one head size, e.g. --heads 10 20 40 80"
    small = [h for h in cfg.heads if h < 2]
    if small:
        yield f"every head needs at least 2 classes, got {small} in heads={cfg.heads}"
    for name in ("global_scale", "local_scale"):
        lo_hi = getattr(cfg, name)
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
            yield f"{name} must be two numbers 0 < low <= high <= 1, got {lo_hi}"
    if not 0 <= cfg.val_fraction < 1:
        yield f"val_fraction must lie in [0, 1), got {cfg.val_fraction}"
    if any(m <= 0 for m in cfg.milestones):
        yield f"milestones are epochs >= 1, got {cfg.milestones}"
    if cfg.local_size is not None and cfg.local_size <= 0:
        yield f"local_size must be positive, got {cfg.local_size}"
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            yield "device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto"
    if not cfg.out:
        yield "out must name a run folder"


# Per-data-set facts shared by both presets.
_DATA = {
    "digits": {"image_size": 16, "heads": [10, 20, 40, 80], "augment": "affine"},
    "mnist": {"image_size": 28, "heads": [10, 20, 40, 80], "augment": "affine"},
    "fashion_mnist": {"image_size": 28, "heads": [10, 20, 40, 80], "augment": "byol"},
    "cifar10": {"image_size": 32, "heads": [10, 20, 40, 80], "augment": "byol"},
    "cifar20": {"image_size": 32, "heads": [20, 40, 80, 160], "augment": "byol"},
    "stl10": {"image_size": 96, "heads": [10, 20, 40, 80], "augment": "byol"},
    "imagefolder": {"image_size": 64, "augment": "byol"},
}

# The seed report's recipe (../shared/study/seed-results.md): ResNet-18, 800 epochs, batch 512,
# SGD 0.01 -> 0.4 over 10 epochs then cosine to 0.0004, temperatures 0.1 / 0.05.
_SEED = {
    "backbone": "resnet18", "epochs": 800, "batch_size": 512, "lr": 0.4, "start_lr": 0.01,
    "min_lr": 0.0004, "warmup_epochs": 10, "weight_decay": 1e-4, "momentum": 0.9,
    "optimizer": "sgd", "row_tau": 0.1, "col_tau": 0.05, "mlp_hidden": 4096, "mlp_out": 128,
    "augment": "byol", "global_scale": [0.14, 1.0], "local_crops": 0,
    "milestones": [50, 100, 200, 300, 400, 500, 600, 700, 800],
}

# Tuned for a 2-core CPU: a small CNN that pre-trains in minutes.
_FAST = {
    "backbone": "small", "epochs": 30, "batch_size": 256, "lr": 0.4, "start_lr": 0.01,
    "min_lr": 0.0004, "warmup_epochs": 3, "mlp_hidden": 1024, "mlp_out": 128,
    "milestones": [5, 10, 20, 30],
}
# Measured in results/tuning.md. digits: native 8 px, a narrow CNN, 100 epochs and two extra
# affine views (multi-crop), about 1.5 CPU-minutes; more views steadied the seeds most.
# Fashion-MNIST: half resolution (14 px) and 5 epochs fit a 30-minute CPU budget.
_FAST_DATA = {
    "digits": {"image_size": 8, "small_width": 16, "epochs": 100, "local_crops": 2,
               "milestones": [10, 25, 50, 100]},
    "mnist": {"image_size": 28},
    "fashion_mnist": {"image_size": 14, "small_width": 16, "epochs": 5, "warmup_epochs": 1,
                      "global_scale": [0.25, 1.0], "milestones": [1, 2, 3, 4, 5]},
}


def preset(name: str, dataset: str) -> dict[str, Any]:
    """Overrides a preset makes for a data set; the seed preset keeps each data set's native size."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is unknown; choose one of {', '.join(PRESETS)}")
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
    values = dict(_DATA[dataset])
    if name == "seed":
        values.update(_SEED)
        if dataset in ("mnist", "digits"):
            values["augment"] = _DATA[dataset]["augment"]
    else:
        values.update(_FAST)
        values.update(_FAST_DATA.get(dataset, {}))
    values["out"] = f"runs/{dataset}"
    return values


def make_config(dataset: str = "digits", preset_name: str = "fast", **overrides: Any) -> Config:
    """A validated config: data-set preset first, then explicit overrides (CLI or papermill)."""
    values = preset(preset_name, dataset)
    values["dataset"] = dataset
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(values).validate()


def from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from loose values (JSON, papermill strings), checking every field's type."""
    names = {f.name: f for f in fields(Config)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(names)}")
    hints = typing.get_type_hints(Config)
    return Config(**{k: coerce(k, v, hints[k]) for k, v in values.items()})


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn a parameter into its declared type, or say which parameter had which bad value."""
    try:
        return _coerce(value, hint)
    except (TypeError, ValueError):
        raise ConfigError(
            f"parameter {name} got {value!r}, which is not a valid {_type_name(hint)}"
        ) from None


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if origin is list:
        if isinstance(value, str):
            value = value.replace(",", " ").strip("[] ").split()
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [_coerce(v, args[0]) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    if hint is str:
        if not isinstance(value, (str, Path)):
            raise TypeError
        return str(value)
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def load_config(path: str | Path) -> Config:
    """Read a run's config.json (ignoring its provenance block)."""
    data = json.loads(Path(path).read_text())
    return from_dict(data.get("config", data))


# Fields that decide what a run computes; a run folder refuses to resume when any differs.
RESUME_INSENSITIVE = ("out", "device", "download", "data_root", "compile", "milestones")


def differences(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """The fields that would change what a resumed run computes."""
    a, b = old.to_dict(), new.to_dict()
    return {k: (a[k], b[k]) for k in a if k not in RESUME_INSENSITIVE and a[k] != b[k]}


HELP = {
    "dataset": "data set: " + ", ".join(DATASETS),
    "data_root": "folder holding the data set files (default: $SCLIB_DATA or ./data)",
    "download": "download the data set through torchvision if it is missing",
    "unlabelled": "also pre-train on STL-10's 100k unlabelled images",
    "val_fraction": "hold out this fraction of the train split and evaluate on it (for tuning); 0: the test split",
    "backbone": "resnet18 (CIFAR stem below 64 px) or small (a CNN for CPU runs)",
    "small_width": "first-stage channels of the small CNN (stages w, 2w, 4w, 4w, 8w); ignored by resnet18",
    "image_size": "side of the square views the network sees, in pixels",
    "epochs": "pre-training epochs",
    "batch_size": "global batch size (split over processes under torchrun)",
    "lr": "peak learning rate, reached after the warm-up",
    "start_lr": "learning rate at the first step of the warm-up",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_epochs": "epochs of linear warm-up",
    "weight_decay": "weight decay (not applied to biases and norm layers)",
    "momentum": "SGD/LARS momentum",
    "optimizer": "sgd, lars or adamw",
    "heads": "classification head sizes; the one equal to the number of classes is evaluated",
    "row_tau": "temperature of the softmax over classes",
    "col_tau": "temperature of the softmax over the batch",
    "mlp_hidden": "hidden width of the projector",
    "mlp_out": "output width of the projector (the embedding the heads read)",
    "augment": "view recipe: byol (crops, flips, colour, blur, solarise) or affine (small digits)",
    "global_scale": "area range of the two global crops",
    "local_scale": "area range of the local crops",
    "local_crops": "number of small local crops per image (multi-crop); 0 turns it off",
    "local_size": "side of the local crops (default: derived from image_size)",
    "nn_queue": "size of the nearest-neighbour queue for view 1's embeddings; 0 turns it off",
    "milestones": "epochs whose checkpoints are kept for the probe-vs-epoch curve",
    "device": "auto, cpu or cuda",
    "amp": "bf16 autocast on CUDA",
    "compile": "torch.compile the model",
    "sync_bn": "synchronise batch norm across processes under torchrun",
    "seed": "random seed of initialisation, order and augmentations",
    "out": "run folder (rerunning the same command there resumes)",
}
