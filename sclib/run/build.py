"""A run's parts, built from its Config: the data, the model (fresh or from a checkpoint of the
run), the view recipe, the precision and the device. One place, so that training, evaluation,
probes and the second stage build the same things the same way; :func:`build_parts` builds a
training run's, once per run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sclib.core import distributed
from sclib.core.augment import AugmentConfig, Augmenter
from sclib.core.model import SelfClassifier
from sclib.data import DatasetInfo, DataSplits, counts_line, hold_out, load_dataset, split_counts
from sclib.run import checkpoint
from sclib.run.config import Config, ConfigError, differences, from_dict, load_config
from sclib.run.files import first_line
from sclib.run.paths import RunPaths, open_run


def load_data(cfg: Config, download: bool = False) -> DataSplits:
    """The run's data set; only an ImageFolder is resized on load (its images vary in size).

    With ``val_fraction`` the eval split is a validation split cut from the train split.
    """
    splits = load_dataset(cfg.dataset, cfg.data_root, download=download, unlabelled=cfg.unlabelled,
                          image_size=cfg.image_size if cfg.dataset == "imagefolder" else None)
    return hold_out(splits, cfg.val_fraction) if cfg.val_fraction else splits


@dataclass
class RunParts:
    """What a run trains with, built once from its Config by :func:`build_parts`.

    ``images`` are the training images (train split, plus STL-10's unlabelled ones when asked
    for) on ``device``, uint8 (N, C, H, W). ``sync_free`` is the step mode (Config ``step_mode``)
    as it applies on this device. ``notes`` are what the user should hear before it trains.
    """

    cfg: Config
    data: DataSplits
    device: torch.device
    precision: Precision
    model: SelfClassifier
    augment: Augmenter
    images: torch.Tensor
    sync_free: bool
    scored_head: int
    notes: list[str]


def build_parts(cfg: Config, data: DataSplits) -> RunParts:
    """The data's training images, the model (seeded by ``cfg.seed``), the view recipe, the
    precision and the device of a run; ConfigError when the data cannot train it.

    Under torchrun call it after ``distributed.setup()``: each process takes its own GPU.
    The ``sync_free`` step (``step_mode`` auto: on CUDA only) augments with static shapes and
    steps a fused optimiser, so the GPU never waits on the host; on a CPU it rounds differently,
    and CPU runs stay bit-identical to earlier versions in the eager step.
    """
    device = resolve_device(cfg.device)
    if device.type == "cuda" and distributed.world_size() > 1:
        device = torch.device("cuda", distributed.local_rank())
    chosen = precision(device, cfg.amp)
    sync_free = {"auto": device.type == "cuda", "sync-free": True, "eager": False}[cfg.step_mode]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.info)
    if cfg.sync_bn and distributed.world_size() > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if chosen.channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = Augmenter(augment_config(cfg, data.info), sync_free=sync_free, compile=cfg.compile and sync_free)
    images = data.train_images
    if data.unlabelled_images is not None:
        images = torch.cat([images, data.unlabelled_images])
    return RunParts(cfg, data, device, chosen, model, augment, images.to(device), sync_free,
                    cfg.scored_head(len(data.info.classes)), run_notes(cfg, data))


def run_notes(cfg: Config, data: DataSplits) -> list[str]:
    """What a user should hear before a run trains: the image folder's counts, what the data's
    size leaves out (:func:`size_notes`) and a scored head that is not a classifier of the classes."""
    notes = []
    if data.info.name == "imagefolder":  # what the walk of the tree found, so a stray folder shows
        notes.append(f"image folder {cfg.data_root}: {counts_line(split_counts(data))}")
    extra = 0 if data.unlabelled_images is None else len(data.unlabelled_images)
    notes += [f"note: {note}" for note in size_notes(cfg, len(data.train_images) + extra, len(data.eval_labels),
                                                     len(data.info.classes))]
    warning = cfg.head_warning(len(data.info.classes))
    return notes + ([f"warning: {warning}"] if warning else [])


def size_notes(cfg: Config, train_images: int, eval_images: int, classes: int) -> list[str]:
    """What the data's size leaves out of a run, said before it trains; ConfigError if it cannot train.

    Training adapts to small data (a batch is at most the whole train split) and evaluation
    skips what needs more images (k-means with k = classes), so a user must hear it, not find
    a number that rests on six images.
    """
    if train_images < 2:
        raise ConfigError(f"the train split holds {train_images} image(s) but the loss normalises over a batch "
                          "of at least 2; lower --val-fraction or add images")
    notes = []
    if cfg.batch_size > train_images:
        notes.append(f"batch_size {cfg.batch_size} is larger than the {train_images} training images: "
                     f"every step uses all {train_images}")
    big = [h for h in cfg.heads if h > train_images]
    if big:
        notes.append(f"heads {big} have more clusters than the {train_images} training images: "
                     "most of their clusters must stay empty")
    if eval_images < classes:
        notes.append(f"the eval split holds {eval_images} images for {classes} classes: the k-means baselines "
                     f"will be skipped and every score rests on {eval_images} images")
    return notes


def build_model(cfg: Config, info: DatasetInfo) -> SelfClassifier:
    return SelfClassifier(
        cfg.backbone, info.channels, cfg.image_size, cfg.heads, mlp_hidden=cfg.mlp_hidden, mlp_out=cfg.mlp_out,
        small_width=cfg.small_width, cls_gain=cfg.cls_gain,
    )


def augment_config(cfg: Config, info: DatasetInfo) -> AugmentConfig:
    return AugmentConfig(
        image_size=cfg.image_size,
        channels=info.channels,
        mean=tuple(info.mean),
        std=tuple(info.std),
        style=cfg.augment,
        global_scale=tuple(cfg.global_scale),
        local_scale=tuple(cfg.local_scale),
        local_crops=cfg.local_crops,
        local_size=cfg.local_size,
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles).

    Elsewhere PyTorch emulates bf16 in fp32 registers, slower than fp32 itself, so those CPUs
    stay in fp32. The checks are PyTorch's own (``torch.cpu``); a PyTorch without them counts
    as no support.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Precision:
    """How a device runs the network: bf16 autocast or not, channels-last or not, and why.

    The loss always runs in fp32 (``SelfClassifierLoss`` leaves autocast); only convolutions and
    matmuls drop to bf16. On a CPU with native bf16 the small CNN's step runs about 3x faster
    (``benchmarks/README.md``) and its loss agrees with fp32 to about 1e-3 relative
    (``tests/test_precision.py``).
    """

    bf16: bool
    channels_last: bool
    why: str

    def __str__(self) -> str:
        layout = "channels-last" if self.channels_last else "contiguous"
        return f"{'bf16 autocast' if self.bf16 else 'fp32'}, {layout} ({self.why})"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def precision(device: torch.device, amp: bool) -> Precision:
    """The precision a run uses on ``device``: bf16 where the hardware does bf16, fp32 elsewhere.

    CUDA: bf16 autocast when ``amp`` (the default), channels-last always (as before this rule
    reached CPUs). CPU: bf16 autocast plus channels-last when ``amp`` and the CPU has native bf16;
    otherwise fp32 and contiguous tensors, exactly the CPU step of earlier versions.
    """
    if device.type == "cuda":
        return Precision(amp, True, "CUDA" if amp else "CUDA, --amp off")
    if not amp:
        return Precision(False, False, f"{device.type}, --amp off")
    if device.type == "cpu" and cpu_has_native_bf16():
        return Precision(True, True, "CPU with native bf16")
    return Precision(False, False, f"{device.type} without native bf16")


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """The autocast context of :func:`precision` (bf16 or none)."""
    return precision(device, amp).autocast(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_state(paths: RunPaths, checkpoint_path: str | Path | None = None) -> dict[str, Any]:
    """A checkpoint's training state: ``checkpoint_path``, or the run's newest intact one.

    A ``checkpoint_path`` must have been written by this run (its recorded config the run's):
    scores computed from another run's weights would land in this run's eval.json and probe.csv
    under this run's seed. CheckpointError in one line otherwise.
    """
    if checkpoint_path is not None:
        state = checkpoint.load(checkpoint_path, require=checkpoint.FOR_WEIGHTS)
        check_checkpoint_of(paths, state, checkpoint_path)
        return state
    state = checkpoint.load_latest(paths.checkpoints, require=checkpoint.FOR_WEIGHTS)
    if state is None:
        raise checkpoint.CheckpointError(f"{paths.checkpoints} holds no checkpoint yet; pre-train first")
    return state


# The fields that shape the network's weights.
ARCHITECTURE = ("backbone", "heads", "mlp_hidden", "mlp_out", "small_width", "cls_gain", "image_size")


def check_checkpoint_of(paths: RunPaths, state: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose recorded config (seed included) differs from the run's config.json.

    A state without a recorded config (an older version's) is taken as it is.
    """
    recorded = state.get("config")
    if not isinstance(recorded, dict):
        return
    try:
        theirs = from_dict(recorded)
    except ConfigError:
        return
    ours = load_config(paths.config)
    diffs = differences(ours, theirs)
    if set(diffs) & set(ARCHITECTURE):
        return  # loading its weights refuses it, saying it does not fit the architecture
    if diffs:
        listed = ", ".join(f"{k} {a!r} here, {b!r} there" for k, (a, b) in diffs.items())
        raise checkpoint.CheckpointError(
            f"checkpoint {path} was written by another run than {paths.root} ({listed}); its scores would be "
            f"recorded as this run's: pass --run with the run folder that holds it")


def model_from_state(cfg: Config, info: DatasetInfo, state: dict[str, Any], device: str | torch.device,
                     path: str | Path, paths: RunPaths) -> SelfClassifier:
    """The run's model with a state's weights, in eval mode on ``device`` (``path`` names the file in errors)."""
    model = build_model(cfg, info)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise misfit(path, cfg, paths, err) from None
    return model.to(device).eval()


def load_model(run_dir: str | Path, info: DatasetInfo, checkpoint_path: str | Path | None = None,
               device: str | torch.device = "cpu") -> tuple[SelfClassifier, int]:
    """The run's model at a checkpoint (default: the newest intact one) and that epoch."""
    cfg, paths = open_run(run_dir)
    state = run_state(paths, checkpoint_path)
    model = model_from_state(cfg, info, state, device, checkpoint_path or state.get("path", paths.last), paths)
    return model, int(state["epoch"])


def misfit(path: str | Path, cfg: Config, paths: RunPaths, err: BaseException,
           then: str = "") -> checkpoint.CheckpointError:
    """The one-line error for a checkpoint that does not fit the run's architecture (``then``: what to do)."""
    return checkpoint.CheckpointError(
        f"checkpoint {path} does not fit the architecture in {paths.config} (backbone {cfg.backbone}, "
        f"heads {cfg.heads}): {first_line(err)}{then}")
