"""A run folder is the unit of work: config, history, checkpoints, metrics and figures.

Everything that continues or reads a run takes its folder; this module knows the layout and the
run's lifecycle (a seed's config and folder, whether it may resume, whether it has finished, the
provenance config.json records), and rebuilds a run's model and view recipe from its config.
Training itself is ``sclib.train``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import sklearn
import torch
import torchvision

from sclib import __version__, checkpoint, distributed
from sclib.augment import AugmentConfig
from sclib.config import Config, ConfigError, Recipe, differences, from_dict, load_config
from sclib.config import record as config_record
from sclib.data import DatasetInfo, DataSplits, hold_out, load_dataset
from sclib.files import (
    LOCK_NAME,
    FolderLock,
    UnreadableFileError,
    read_csv_rows,
    read_json,
    read_record,
    suggested_command,
    write_json,
)
from sclib.model import SelfClassifier
from sclib.tables import Evaluation


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    @property
    def probe(self) -> Path:
        return self.root / "probe.csv"

    @property
    def probe_json(self) -> Path:
        return self.root / "probe.json"

    @property
    def arrays(self) -> Path:
        """What the reports draw: every head's assignments, the labels, sample images (committed)."""
        return self.root / "arrays.npz"

    @property
    def eval_features(self) -> Path:
        """The eval split's backbone features (float16), what the 2-D embeddings are made from."""
        return self.root / "eval_features.npz"

    @property
    def embeddings(self) -> Path:
        """The 2-D embeddings notebook 04 drew (committed, so a clone re-renders without features)."""
        return self.root / "embeddings.npz"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def refine(self) -> Path:
        """The second stage's folder (``python -m sclib refine``)."""
        return self.root / "refine"

    @property
    def refine_eval(self) -> Path:
        return self.refine / "eval.json"

    @property
    def last(self) -> Path:
        return self.checkpoints / checkpoint.LAST

    @property
    def figures(self) -> Path:
        return self.root / "figures"


# A study folder: the executed notebooks OUT/NN_name.ipynb (and .html), its seed runs in OUT/run/seed<N>.
STUDY_NOTEBOOKS = ("01_pretrain", "02_linear_probe", "03_clustering_metrics", "04_embeddings", "05_cluster_images")
SWEEP_NOTEBOOK = "06_ablations"
ALL_NOTEBOOKS = (*STUDY_NOTEBOOKS, SWEEP_NOTEBOOK)
RUN_GROUP = "run"
_SEED_PREFIX = "seed"


def seed_folder(group: str | Path, seed: int) -> Path:
    """Where ``--seeds`` puts one seed's run: sibling folders inside the group folder."""
    return Path(group) / f"{_SEED_PREFIX}{seed}"


def folder_seed(folder: str | Path) -> int | None:
    """The seed in a folder name that :func:`seed_folder` made (None for any other name)."""
    name = Path(folder).name
    digits = name[len(_SEED_PREFIX):]
    return int(digits) if name.startswith(_SEED_PREFIX) and digits.isdigit() else None


def run_folders(path: str | Path) -> list[Path]:
    """A run folder, or the seed runs of a group folder (``--seeds``), in seed order."""
    path = Path(path)
    if (path / "config.json").exists():
        return [path]
    runs = [p for p in path.glob(f"{_SEED_PREFIX}*") if (p / "config.json").exists() and folder_seed(p) is not None]
    if not runs:
        raise FileNotFoundError(f"{path} is neither a run folder nor a folder of seed runs (no config.json); "
                                f"pre-train first: {suggested_command('python -m sclib pretrain --out {}', path)}")
    return sorted(runs, key=folder_seed)


def seed_configs(recipe: Recipe, seeds: list[int] | None) -> list[Config]:
    """One config per seed, in sibling folders OUT/seed<N>; without seeds, the one run in OUT."""
    if not seeds:
        return [recipe.resolve()]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {seeds}")
    base = recipe.resolve()
    return [recipe.resolve(over={"seed": seed, "out": str(seed_folder(base.out, seed))}) for seed in seeds]


def finished_metrics(paths: RunPaths, epochs: int) -> dict[str, Any] | None:
    """A finished run's metrics.json, read without data or checkpoints; None while unfinished.

    The one test of "is this run finished": metrics.json of at least ``epochs`` epochs. So a run
    trained elsewhere and copied home without its checkpoints still counts, and an unreadable
    metrics.json (a crash elsewhere) counts as unfinished: training or evaluating writes it again.
    """
    if not paths.metrics.exists():
        return None
    try:
        metrics = read_json(paths.metrics)
        return metrics if int(metrics.get("epoch", 0)) >= epochs else None
    except (ValueError, OSError, AttributeError):
        return None


def check_finished(runs: list[tuple[Config, RunPaths]], then: str) -> None:
    """Refuse the first unfinished run in one line; ``then`` says what to do about it."""
    for cfg, paths in runs:
        if finished_metrics(paths, cfg.epochs) is None:
            if paths.metrics.exists():
                read_metrics(paths)  # a damaged metrics.json is named as such
            raise ConfigError(f"run {paths.root} has not finished (no metrics.json of epoch {cfg.epochs}); {then}")


def check_resumable(cfg: Config, paths: RunPaths) -> None:
    """Refuse to continue a run folder made with a different config, saying what differs."""
    if paths.root.exists() and not paths.root.is_dir():
        raise ConfigError(f"out {paths.root} is a file, not a folder; choose another --out")
    if paths.config.exists():
        diffs = differences(load_config(paths.config), cfg)
        if diffs and holds_results(paths):
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diffs.items())
            raise ConfigError(
                f"run folder {paths.root} was made with a different config ({listed}); "
                "rerun with the same parameters to resume, or choose another --out"
            )
    elif paths.root.is_dir() and any(p.name != LOCK_NAME for p in paths.root.iterdir()):
        raise ConfigError(f"out {paths.root} is a non-empty folder that is not a run folder; choose another --out")


def lock_run(paths: RunPaths) -> FolderLock:
    """The run folder's writer lock (a context manager): a second process that would write the same
    run refuses in one line naming the holder, instead of both writing and one run's files
    silently replacing the other's. A lock left by a killed process does not block."""
    return FolderLock(paths.root, "run folder")


def holds_results(paths: RunPaths) -> bool:
    """Whether a run folder holds anything a new config would clobber: a checkpoint or a result.

    A run stopped before its first checkpoint (say, a non-finite loss in epoch 1) holds only its
    config.json, and a fresh start into it, with other parameters, loses nothing.
    """
    return any(paths.checkpoints.glob("*.pt")) or any(
        p.exists() for p in (paths.metrics, paths.eval, paths.probe, paths.arrays))


# ----------------------------------------------------------------------------------------------
# Provenance: config.json's record of what produced the run

def provenance(device: torch.device, numerics: str = "") -> dict[str, Any]:
    """What produced a run (or a resumed stretch of it), so a number can be traced to code and hardware."""
    commit, dirty = git_state()
    return {
        "sclib": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "precision": numerics,
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),  # the result depends on it: reductions split differently
        "world_size": distributed.world_size(),
        "started": _now(),
    }


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what ``platform`` knows), for provenance."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_PACKAGE = Path(__file__).resolve().parent  # this very package's folder


def git_state(package: Path = _PACKAGE) -> tuple[str, bool | None]:
    """(commit, dirty) of the repository that holds this very package, else ("unknown", None).

    A copy of sclib without its own ``.git`` placed inside another repository must not report
    that repository's commit, so the repository's top level has to contain this package.
    ``dirty`` means uncommitted changes to the package itself: a study rewriting ``results/``
    changes no code.
    """
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=package)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top.strip()).resolve() / package.name != package:
        return "unknown", None
    commit = (git("rev-parse", "HEAD") or "").strip() or "unknown"
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit, (bool(status.strip()) if status is not None else None)


def record_start(paths: RunPaths, cfg: Config, started: dict[str, Any], counts: dict[str, Any],
                 resumed_at: int | None = None) -> None:
    """Write config.json as a run (re)starts; ``started`` is :func:`provenance` of this process.

    A run that starts from epoch 0 records fresh provenance (even in an old folder whose
    checkpoints are gone); a resume at epoch ``resumed_at`` appends its own.
    """
    if resumed_at is not None and paths.config.exists():
        record = read_json(paths.config, kind=dict)
        record.setdefault("provenance", {}).setdefault("resumed", []).append({**started, "epoch": resumed_at})
    else:
        record = {**config_record(cfg, paths.root), "provenance": started, "images": counts}
    write_json(paths.config, record)


def record_finish(paths: RunPaths) -> None:
    """Stamp config.json's provenance with the time the run finished."""
    record = read_json(paths.config, kind=dict)
    record.setdefault("provenance", {})["finished"] = _now()
    write_json(paths.config, record)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_data(cfg: Config, download: bool = False) -> DataSplits:
    """The run's data set; only an ImageFolder is resized on load (its images vary in size).

    With ``val_fraction`` the eval split is a validation split cut from the train split.
    """
    splits = load_dataset(cfg.dataset, cfg.data_root, download=download, unlabelled=cfg.unlabelled,
                          image_size=cfg.image_size if cfg.dataset == "imagefolder" else None)
    return hold_out(splits, cfg.val_fraction) if cfg.val_fraction else splits


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


def open_run(run_dir: str | Path) -> tuple[Config, RunPaths]:
    """A finished or running run's config; a folder without one is not a run."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.exists():
        raise FileNotFoundError(
            f"{paths.root} is not a run folder (no config.json); "
            f"pre-train first: {suggested_command('python -m sclib pretrain --out {}', paths.root)}"
        )
    return load_config(paths.config), paths


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


# ----------------------------------------------------------------------------------------------
# Reading a run's files: each checked when read, a damaged one named in one line

def _fix(paths: RunPaths, command: str) -> str:
    again = suggested_command(f"python -m sclib {command} --run {{}}", paths.root)
    return f"rerun `{again}` to write it again, or copy it again from where the run was made"


METRIC_KEYS = ("epoch", "nmi", "ami", "ari", "acc")


def read_metrics(paths: RunPaths) -> dict[str, Any]:
    """metrics.json: the scored head after the last epoch (fractions) and that epoch."""
    return read_record(paths.metrics, METRIC_KEYS, "copy the run folder again from where it was trained, or "
                                                   "delete metrics.json and rerun pretrain to evaluate again")


def read_evaluation(paths: RunPaths, seed: int) -> Evaluation:
    """eval.json as an :class:`Evaluation` (UnreadableFileError naming it when cut or incomplete)."""
    fix = _fix(paths, "evaluate")
    record = read_record(paths.eval, ("epoch", "evaluated_head", "heads", "kmeans_features", "kmeans_pixels"), fix)
    try:
        evaluation = Evaluation.from_json(record, seed)
        scored = evaluation.scored  # an index past the heads is an IndexError
        if not all(isinstance(head, dict) and set(METRIC_KEYS[1:]) <= set(head) for head in evaluation.heads) \
                or not isinstance(scored, dict):
            raise KeyError("a head without its metrics")
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise UnreadableFileError(f"{paths.eval} is damaged or from another version ({type(err).__name__}: "
                                  f"{err}); {fix}") from None
    return evaluation


HISTORY_COLUMNS = ("epoch", "loss", "lr", "clusters_used", "images_per_s", "seconds")


def _read_table(path: Path, columns: tuple[str, ...], numeric: tuple[str, ...], fix: str):
    """A CSV file checked whole (``files.read_csv_rows``), then as pandas reads it, with every
    ``numeric`` column holding numbers (blank cells are NaN)."""
    import pandas as pd

    read_csv_rows(path, columns, fix)
    frame = pd.read_csv(path)
    bad = [c for c in numeric if c in frame and len(frame) and not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise UnreadableFileError(f"{path} is damaged (column {bad[0]} holds values that are not numbers); {fix}")
    return frame


def read_history(paths: RunPaths, epochs: int | None = None):
    """history.csv as a DataFrame, one row per epoch 1..N (N = ``epochs`` when given, a finished run).

    A file cut mid-line, a row missing fields, epochs out of order or too few of them raise
    UnreadableFileError naming the file: a summary would otherwise report a wrong training time.
    """
    fix = "copy the run folder again from where it was trained (rerunning pretrain on an unfinished run rewrites it)"
    frame = _read_table(paths.history, HISTORY_COLUMNS, HISTORY_COLUMNS, fix)
    found = [int(e) for e in frame["epoch"]]
    if found != list(range(1, len(found) + 1)) or (epochs is not None and len(found) != epochs):
        want = f"epochs 1 to {epochs}" if epochs is not None else "epochs 1, 2, 3, ..."
        raise UnreadableFileError(f"{paths.history} is damaged (it holds {len(found)} row(s), not {want}); {fix}")
    return frame


def read_probe(paths: RunPaths):
    """probe.csv as a DataFrame (epoch, probe, top1, top3, ...), every row complete."""
    fix = _fix(paths, "probe") + " (with --all-milestones)"
    return _read_table(paths.probe, ("epoch", "probe", "top1", "top3"), ("epoch", "top1", "top3"), fix)


ARRAY_KEYS = ("labels", "assigned", "head_sizes", "sample_index", "sample_images")
FEATURE_KEYS = ("features",)


def read_arrays(paths: RunPaths) -> dict[str, Any]:
    """arrays.npz, every array read whole (a cut file raises UnreadableFileError naming it)."""
    return read_npz(paths.arrays, ARRAY_KEYS, _fix(paths, "evaluate"))


def read_eval_features(paths: RunPaths) -> Any:
    """eval_features.npz's float16 (or float32) features [N, D] of the eval split.

    Runs evaluated before the features had a file of their own hold them in arrays.npz.
    """
    if not paths.eval_features.exists() and paths.arrays.exists():
        older = read_arrays(paths)
        if "features" in older:
            return older["features"]
    return read_npz(paths.eval_features, FEATURE_KEYS, _fix(paths, "evaluate"))["features"]


def read_npz(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, Any]:
    """An .npz file read whole, refused in one line when missing, cut or lacking one of ``keys``."""
    import zipfile

    import numpy as np

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {fix}")
    try:
        with np.load(path) as arrays:
            data = {k: arrays[k] for k in arrays.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as err:
        raise UnreadableFileError(f"{path} is damaged ({type(err).__name__}: {checkpoint.first_line(err)}); "
                                  f"{fix}") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise UnreadableFileError(f"{path} is damaged or from another version (it lacks "
                                  f"{', '.join(missing)}); {fix}")
    return data


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
        f"heads {cfg.heads}): {checkpoint.first_line(err)}{then}")
