"""One parameter vocabulary for the CLI, the notebooks' papermill parameters and config.json.

A run is one :class:`Config`, resolved in one place (:func:`make_config`) in two layers:

1. a recipe file, ``sclib/recipes/<preset>/<dataset>.yaml`` (or, with ``--config``, a run's own
   ``config.json`` or any recipe file of your own), which sets every training choice;
2. explicit overrides: CLI flags, notebook parameters, a sweep's variant.

The fields a recipe must set have no default below, so a recipe file cannot silently inherit a
value from somewhere else; the remaining defaults are the method's (multi-crop sizes, no
nearest-neighbour queue) and where and how a run executes (device, seed, folder). ``--help`` and
``--print-config`` show the resolved values, never these defaults alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from sclib.core.names import BACKBONES, CLS_GAINS, DATASETS, OPTIMIZERS, STYLES
from sclib.run.files import UnreadableFileError, path_problem, read_json, read_text

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PRESETS: tuple[str, ...] = tuple(sorted(p.name for p in RECIPES.iterdir() if p.is_dir()))
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The training step's two modes: "sync-free" (static-shape augmentation, a fused optimiser step,
# cuDNN autotuning: the GPU never waits on the host) and "eager" (the CPU step, bit for bit as
# earlier versions); "auto" takes sync-free on CUDA and eager elsewhere.
STEP_MODES = ("auto", "sync-free", "eager")


class ConfigError(ValueError):
    """A parameter value that cannot describe a run; the message says which and how to fix it."""


# Seeds are refused outside [0, SEED_LIMIT): torch.manual_seed on a CPU keeps the low 32 bits
# (seed 2**32 trains exactly as seed 0), and a negative seed names a folder ("seed-1") that no
# command finds again.
SEED_LIMIT = 2**32
# The smallest side of a view the augmentations can crop and blur (sclib.core.augment checks it too).
MIN_VIEW_SIZE = 2


def _param(help: str, default: Any = MISSING) -> Any:
    """A Config field with its help text beside it (the CLI flag's help)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class Config:
    """A pre-training run. Field names are the CLI flags (``--batch-size``) and papermill names."""

    # -- the data
    dataset: str = _param("data set: " + ", ".join(DATASETS))
    data_root: str | None = _param("folder holding the data set files; none: $SCLIB_DATA, else ./data", None)
    download: bool = _param("download the data set through torchvision if it is missing", False)
    unlabelled: bool = _param("also pre-train on STL-10's 100k unlabelled images", False)
    val_fraction: float = _param(
        "hold out this fraction of the train split and evaluate on it (for tuning); 0: the test split", 0.0)

    # -- the recipe: every recipe file sets these
    backbone: str = _param("network: " + ", ".join(BACKBONES) + " (resnet18 gets the CIFAR stem below 64 px)")
    image_size: int = _param("side of the square views the network sees, in pixels")
    heads: list[int] = _param("classification head sizes; the one equal to the number of classes is scored")
    mlp_hidden: int = _param("hidden width of the projector")
    mlp_out: int = _param("output width of the projector (the embedding the heads read)")
    row_tau: float = _param("temperature of the softmax over classes")
    col_tau: float = _param("temperature of the softmax over the batch")
    epochs: int = _param("pre-training epochs")
    batch_size: int = _param("global batch size (split over processes under torchrun)")
    optimizer: str = _param("optimiser: " + ", ".join(OPTIMIZERS))
    momentum: float = _param("SGD/LARS momentum")
    weight_decay: float = _param("weight decay (not applied to biases and norm layers)")
    start_lr: float = _param("learning rate at the first step of the warm-up")
    lr: float = _param("peak learning rate, reached after the warm-up")
    min_lr: float = _param("learning rate at the end of the cosine decay")
    warmup_epochs: int = _param("epochs of linear warm-up")
    augment: str = _param("view recipe: byol (crops, flips, colour, blur, solarise) or affine (small digits)")
    global_scale: list[float] = _param("area range of the two global crops")
    local_crops: int = _param("number of extra local views per image (multi-crop); 0 turns it off")
    keep_epochs: list[int] = _param("epochs whose checkpoints are kept for the probe-vs-epoch curve")

    # -- the method's defaults, which a recipe may change
    small_width: int = _param("first-stage channels of the small CNN (stages w, 2w, 4w, 4w, 8w)", 32)
    local_scale: list[float] = _param("area range of the local crops", [0.05, 0.4])
    local_size: int | None = _param("side of the local crops; none: DINO's 96/224 of image_size", None)
    cls_gain: str = _param("the heads' gain: fixed at 1 (logits are cosines) or learned from 1, as the official "
                           "weight_norm heads without --fixed_cls: " + ", ".join(CLS_GAINS), "fixed")
    nn_queue: int = _param("length of the nearest-neighbour queue for view 1 (official code); 0 turns it off", 0)

    # -- where and how it runs
    preset: str = _param("the recipe this config was resolved from (a label; 'custom' for none)", "custom")
    adapted: str = _param("what an adaptive recipe chose from the data, and why (a record, set by the recipe)", "")
    device: str = _param("auto, cpu or cuda", "auto")
    amp: bool = _param("bf16 autocast and channels-last where the device does bf16 natively (CUDA; CPUs with "
                       "AVX512-BF16 or AMX); fp32 elsewhere. config.json's provenance records which ran", True)
    compile: bool = _param("torch.compile the model, the loss and, on the GPU step, the augmentation "
                           "(pays off on long GPU runs only)", False)
    compile_mode: str = _param("torch.compile mode with --compile: default, reduce-overhead (CUDA graphs), "
                               "max-autotune or max-autotune-no-cudagraphs", "default")
    step_mode: str = _param("the training step: sync-free (no host sync: static-shape views, fused optimiser; "
                            "the GPU step), eager (the CPU step), or auto (sync-free on CUDA only)", "auto")
    sync_bn: bool = _param("synchronise batch norm across processes under torchrun", False)
    seed: int = _param("random seed of initialisation, order and augmentations", 0)
    out: str = _param("run folder (rerunning the same command there resumes)", "")

    def validate(self) -> Config:
        """Fail at once, before any data is read, with one message per wrong value."""
        problems = list(_problems(self))
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def scored_head(self, num_classes: int) -> int:
        """Index of the head the study scores: the one whose size is the number of classes."""
        return self.heads.index(num_classes) if num_classes in self.heads else 0

    def head_warning(self, num_classes: int) -> str | None:
        """Why the scored head is not the natural one, when no head has ``num_classes`` classes."""
        if num_classes in self.heads:
            return None
        return (f"no head has {num_classes} classes (heads {self.heads}), so head 0 with {self.heads[0]} "
                f"clusters is scored: ACC then counts every cluster left without a class as wrong; "
                f"add {num_classes} to --heads to score a {num_classes}-way classifier")


HELP = {f.name: f.metadata["help"] for f in fields(Config)}
_FIELD_NAMES = tuple(HELP)
RECIPE_FIELDS = tuple(f.name for f in fields(Config)
                      if f.default is MISSING and f.default_factory is MISSING and f.name != "dataset")


def _problems(cfg: Config):
    for name, value, known in (("dataset", cfg.dataset, DATASETS), ("backbone", cfg.backbone, BACKBONES),
                               ("optimizer", cfg.optimizer, OPTIMIZERS), ("device", cfg.device, DEVICES),
                               ("augment", cfg.augment, STYLES), ("compile_mode", cfg.compile_mode, COMPILE_MODES),
                               ("step_mode", cfg.step_mode, STEP_MODES),
                               ("cls_gain", cfg.cls_gain, CLS_GAINS)):
        if value not in known:
            yield f"{name} {value!r} is unknown; choose one of {', '.join(known)}"
    if cfg.dataset == "imagefolder" and not cfg.data_root:
        yield "dataset 'imagefolder' needs data_root: a folder with train/<class>/* and test/<class>/*"
    for name in ("epochs", "batch_size", "mlp_hidden", "mlp_out", "small_width"):
        if getattr(cfg, name) <= 0:
            yield f"{name} must be a positive integer, got {getattr(cfg, name)}"
    # a crop of one pixel has no content to augment (the view recipes need at least 2 x 2)
    for name in ("image_size", "local_size"):
        value = getattr(cfg, name)
        if value is not None and value < MIN_VIEW_SIZE:
            yield f"{name} must be at least {MIN_VIEW_SIZE} pixels, got {value}"
    if not 0 <= cfg.seed < SEED_LIMIT:
        yield (f"seed must lie in [0, 2**32) (PyTorch's CPU generator keeps 32 bits of a seed, so "
               f"{cfg.seed} would repeat seed {cfg.seed % SEED_LIMIT}), got {cfg.seed}")
    if cfg.batch_size == 1:
        yield "batch_size must be at least 2: the loss normalises over the batch"
    for name in ("lr", "row_tau", "col_tau"):
        if not 0 < getattr(cfg, name) < math.inf:
            yield f"{name} must be positive and finite, got {getattr(cfg, name)}"
    for name in ("start_lr", "min_lr", "weight_decay", "momentum", "warmup_epochs", "local_crops", "nn_queue"):
        if not 0 <= getattr(cfg, name) < math.inf:
            yield f"{name} must not be negative or non-finite, got {getattr(cfg, name)}"
    if not 0 <= cfg.val_fraction < 1:
        yield f"val_fraction must lie in [0, 1), got {cfg.val_fraction}"
    if not cfg.heads:
        yield "heads must list at least one head size, e.g. --heads 10 20 40 80"
    small = [h for h in cfg.heads if h < 2]
    if small:
        yield f"every head needs at least 2 classes, got {small} in heads={cfg.heads}"
    for name in ("global_scale", "local_scale"):
        lo_hi = getattr(cfg, name)
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
            yield f"{name} must be two numbers 0 < low <= high <= 1, got {lo_hi}"
    if any(m <= 0 for m in cfg.keep_epochs):
        yield f"keep_epochs are epochs >= 1, got {cfg.keep_epochs}"
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            yield "device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto"
    if not cfg.out:
        yield "out must name a run folder"
    for name in ("out", "data_root"):
        problem = getattr(cfg, name) and path_problem(getattr(cfg, name), name)
        if problem:
            yield problem


# ----------------------------------------------------------------------------------------------
# Resolution: recipe file, then overrides


def recipe_path(preset: str, dataset: str) -> Path:
    """The recipe file of a preset for a data set."""
    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is unknown; choose one of {', '.join(PRESETS)} "
                          "(or pass --config with a recipe file of your own)")
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
    path = RECIPES / preset / f"{dataset}.yaml"
    if not path.exists():
        have = sorted(p.stem for p in (RECIPES / preset).glob("*.yaml"))
        raise ConfigError(f"preset {preset!r} has no recipe for {dataset} (it has {', '.join(have)}); "
                          "choose another --preset")
    return path


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file's values: a YAML mapping of Config fields, checked for unknown and missing ones."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(read_text(path, "recipe file", "pass a recipe YAML or a run's config.json"))
    except (FileNotFoundError, UnreadableFileError) as err:
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"recipe file {path} must be a mapping of config fields, e.g. 'epochs: 100'")
    rules = values.get("adapt", {})
    if not isinstance(rules, dict):
        raise ConfigError(f"recipe file {path}: 'adapt' must be a mapping of rules")
    _check_names({k: v for k, v in values.items() if k != "adapt"}, f"recipe file {path}")
    return values


def preset(name: str, dataset: str) -> dict[str, Any]:
    """The values a preset's recipe sets for a data set."""
    return read_recipe(recipe_path(name, dataset))


def make_config(dataset: str = "digits", preset_name: str = "fast", **overrides: Any) -> Config:
    """A validated config: the preset's recipe for ``dataset``, then explicit overrides."""
    values = {"out": f"runs/{dataset}", **preset(preset_name, dataset), "dataset": dataset, "preset": preset_name}
    return _resolve(values, overrides, f"recipe {preset_name}/{dataset}")


def config_from_file(path: str | Path, **overrides: Any) -> Config:
    """A validated config from a run's ``config.json`` or a recipe file (YAML), then overrides.

    This is ``--config``: rerun a run exactly, or run a recipe of your own. A recipe file without
    a ``dataset`` key takes the data set from the overrides.
    """
    path = Path(path)
    if path.suffix == ".json":
        values = _read_config_json(path)
    else:
        values = read_recipe(path)
    values.setdefault("preset", "custom")
    dataset = overrides.get("dataset") or values.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} names no dataset; add 'dataset: NAME' to it or pass --dataset")
    values.setdefault("out", f"runs/{dataset}")
    return _resolve(values, overrides, str(path))


@dataclass(frozen=True)
class Recipe:
    """A recipe (a preset, or a file) and the overrides given explicitly on top of it.

    Commands keep the two apart until the end, because a sweep's grid slots in between:
    recipe < ``under`` (a grid's base) < overrides < ``over`` (a variant, a seed).
    """

    dataset: str | None = None
    preset: str = "fast"
    file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def resolve(self, under: dict[str, Any] | None = None, over: dict[str, Any] | None = None) -> Config:
        values = {**(under or {}), **self.overrides, **(over or {})}
        if self.file:
            return config_from_file(self.file, dataset=self.dataset, **values)
        return make_config(self.dataset or "digits", self.preset, **values)

    def describe(self) -> str:
        return f"recipe file {self.file}" if self.file else f"recipe {self.preset}/{self.dataset or 'digits'}"


def _resolve(values: dict[str, Any], overrides: dict[str, Any], source: str) -> Config:
    given = {k: v for k, v in overrides.items() if v is not None}
    rules = values.pop("adapt", None)
    if rules:
        values.update(_adapt(rules, values, given, source))
    values.update(given)
    if "epochs" in given and "keep_epochs" not in given and "keep_epochs" in values:
        # a shortened (or lengthened) run keeps a probe curve of a few points
        values["keep_epochs"] = fit_keep_epochs(coerce("keep_epochs", values["keep_epochs"], list[int]),
                                                coerce("epochs", values["epochs"], int))
    missing = [name for name in RECIPE_FIELDS if name not in values]
    if missing:
        raise ConfigError(f"{source} does not set {', '.join(missing)}; a recipe sets every training choice")
    return from_dict(values).validate()


def fit_keep_epochs(keep_epochs: list[int], epochs: int, points: int = 4) -> list[int]:
    """The recipe's kept epochs that fall inside a (shortened) run, or evenly spaced ones.

    A probe curve needs a few points; a 4-epoch run with the 800-epoch recipe's kept epochs would
    have only its last checkpoint.
    """
    inside = sorted({m for m in keep_epochs if 1 <= m <= epochs})
    if len(inside) >= min(points, epochs) - 1 and inside:
        return sorted(set(inside) | {epochs})
    return sorted({max(1, round(epochs * k / points)) for k in range(1, points + 1)})


def _adapt(rules: dict[str, Any], values: dict[str, Any], given: dict[str, Any], source: str) -> dict[str, Any]:
    """An adaptive recipe's choices for the data at hand (see sclib.run.adapt), recorded in ``adapted``."""
    root = given.get("data_root", values.get("data_root"))
    if not root:
        raise ConfigError(f"{source} adapts to the images in data_root: pass --data-root with train/ and test/ folders")
    from sclib.run.adapt import adapt  # reads images with torch: imported only for an adaptive recipe

    typed = {k: coerce(k, v, typing.get_type_hints(Config)[k]) for k, v in given.items() if k in _FIELD_NAMES}
    try:
        chosen = adapt(rules, values, typed, root)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    return {**chosen.values, "adapted": chosen.note()}


def _check_names(values: dict[str, Any], where: str) -> None:
    names = [f.name for f in fields(Config)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(names)}")


def from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from loose values (JSON, papermill strings), checking every field's type."""
    _check_names(values, "config")
    hints = typing.get_type_hints(Config)
    try:
        return Config(**{k: coerce(k, v, hints[k]) for k, v in values.items()})
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"incomplete config: {err}") from None


def typed_overrides(values: dict[str, Any], where: str = "config_overrides") -> dict[str, Any]:
    """Overrides of Config fields (CLI flags, a notebook's ``config_overrides``) in their declared
    types; ConfigError naming an unknown field or a value of the wrong type, before anything runs."""
    _check_names(values, where)
    hints = typing.get_type_hints(Config)
    return {name: coerce(name, value, hints[name]) for name, value in values.items()}


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


# config.json marks that its relative paths are relative to its own folder (older records, from
# before this mark, hold them relative to the folder the run was started from).
RELATIVE_MARK = ("paths_relative_to", "this folder")


def _read_config_json(path: Path) -> dict[str, Any]:
    """A config.json's config values (a run's record or a bare mapping), its relative data_root
    made usable from the current folder; ConfigError naming the file when it holds no config."""
    fix = "copy the run folder again, or pass another --config"
    try:
        data = read_json(path, fix)
    except (FileNotFoundError, UnreadableFileError) as err:
        raise ConfigError(f"config {err}") from None
    values = data.get("config", data) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        shown = "null" if values is None else f"a JSON {type(values).__name__}"
        raise ConfigError(f"config file {path} is damaged: it holds {shown} where the config mapping belongs; {fix}")
    root = values.get("data_root")
    if data.get(RELATIVE_MARK[0]) == RELATIVE_MARK[1] and isinstance(root, str) and root \
            and not os.path.isabs(os.path.expanduser(root)):
        values = {**values, "data_root": os.path.realpath(path.parent / root)}
    return values


def load_config(path: str | Path) -> Config:
    """Read a run's config.json (ignoring its provenance block).

    A relative ``data_root`` in it is relative to the file's own folder (see :func:`record`), so
    ``evaluate --run R`` finds the data the run trained on from any working folder; it comes
    back as an absolute path.
    """
    return from_dict(_read_config_json(Path(path)))


def record(cfg: Config, folder: str | Path) -> dict[str, Any]:
    """The config as config.json records it in ``folder``: a relative ``data_root`` (relative to
    the working folder now) rewritten relative to ``folder``, so that it means the same folder
    to every command from wherever it runs. Returns the record's top-level keys.
    """
    values = cfg.to_dict()
    root = values.get("data_root")
    if root and not os.path.isabs(os.path.expanduser(root)):
        values["data_root"] = os.path.relpath(os.path.realpath(root), os.path.realpath(folder))
    return {"config": values, RELATIVE_MARK[0]: RELATIVE_MARK[1]}


def to_yaml(cfg: Config) -> str:
    """The resolved config as a recipe file: what ``--print-config`` prints and ``--config`` reads."""
    lines = [f"# resolved from preset {cfg.preset!r}; rerun with: python -m sclib pretrain --config FILE"]
    for f in fields(Config):
        lines.append(f"{f.name + ':':<15} {json.dumps(getattr(cfg, f.name)):<24} # {f.metadata['help']}")
    return "\n".join(lines) + "\n"


# Fields that say where and how a run executes, or label it, rather than what it computes: a run
# folder resumes when only these differ, and refuses when any other field does.
RESUME_INSENSITIVE = ("out", "device", "download", "data_root", "compile", "compile_mode", "step_mode",
                      "keep_epochs", "preset", "adapted")


def differences(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """The fields that would change what a resumed run computes."""
    a, b = old.to_dict(), new.to_dict()
    return {k: (a[k], b[k]) for k in a if k not in RESUME_INSENSITIVE and a[k] != b[k]}


# ----------------------------------------------------------------------------------------------
# The second stage (python -m sclib refine): its own small recipe, recorded in RUN/refine/config.json

REFINE_HELP = {
    "neighbours": "nearest neighbours mined per image in the backbone's feature space (SCAN: 20)",
    "epochs": "passes over the train split's features (0: no neighbour consistency, e.g. to self-label the "
              "first stage's network directly)",
    "batch_size": "anchors per step, each paired with one of its neighbours",
    "lr": "Adam learning rate of the projector and heads",
    "weight_decay": "Adam weight decay",
    "entropy_weight": "weight of the entropy of the mean prediction, which keeps every cluster in use (SCAN: 5)",
    "self_label_epochs": "epochs of self-labelling after neighbour consistency (0: none): the whole network "
                         "fine-tuned on its confident images, strong views, class-balanced cross-entropy",
    "threshold": "self-labelling keeps the images whose scored-head softmax reaches this (SCAN: 0.99)",
    "self_label_lr": "Adam learning rate of self-labelling (SCAN: 1e-4)",
}


@dataclass(frozen=True)
class RefineSettings:
    """The second stage's recipe (SCAN's CIFAR settings where they apply: 20 neighbours, entropy
    weight 5, Adam lr 1e-4 and weight decay 1e-4)."""

    neighbours: int = 20
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 1e-4
    entropy_weight: float = 5.0
    self_label_epochs: int = 0
    threshold: float = 0.99
    self_label_lr: float = 1e-4

    def validate(self) -> RefineSettings:
        if self.epochs < 0:
            raise ConfigError(f"refine --epochs must not be negative, got {self.epochs}")
        if self.epochs == 0 and self.self_label_epochs == 0:
            raise ConfigError("refine with --epochs 0 and no --self-label-epochs has nothing to do; give one of them")
        for name in ("neighbours", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"refine --{name.replace('_', '-')} must be a positive integer, "
                                  f"got {getattr(self, name)}")
        for name in ("lr", "entropy_weight"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"refine --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"refine --weight-decay must not be negative, got {self.weight_decay}")
        if self.self_label_epochs < 0:
            raise ConfigError(f"refine --self-label-epochs must not be negative, got {self.self_label_epochs}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"refine --threshold must lie strictly between 0 and 1, got {self.threshold}")
        if not self.self_label_lr > 0:
            raise ConfigError(f"refine --self-label-lr must be positive, got {self.self_label_lr}")
        return self
