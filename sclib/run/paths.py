"""A run folder's layout: the files a run writes, a study folder's notebooks and seed folders.

A run folder is the unit of work: config, history, checkpoints, metrics and figures. Everything
that continues or reads a run takes its folder. Pure paths: no torch, so what only reads results
(tables, summaries, the front page) can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sclib.run.config import Config, load_config
from sclib.run.files import (
    suggested_command,
)

LAST = "last.pt"  # the newest checkpoint, in RUN/checkpoints; milestones are epoch_NNNN.pt


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
        """What the reports draw: every head's assignments, the labels (committed; sclib.run.exports)."""
        return self.root / "arrays.json"

    @property
    def samples(self) -> Path:
        """The sample images of every cluster that arrays.json indexes, as one PNG mosaic (committed)."""
        return self.root / "samples.png"

    @property
    def legacy_arrays(self) -> Path:
        """Where runs evaluated by earlier versions kept their arrays (and, before that, their features)."""
        return self.root / "arrays.npz"

    @property
    def eval_features(self) -> Path:
        """The eval split's backbone features (float16), what the 2-D embeddings are made from."""
        return self.root / "eval_features.npz"

    @property
    def embeddings(self) -> Path:
        """The 2-D embeddings notebook 04 drew (committed, so a clone re-renders without features)."""
        return self.root / "embeddings.json"

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
        return self.checkpoints / LAST

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


def open_run(run_dir: str | Path) -> tuple[Config, RunPaths]:
    """A finished or running run's config; a folder without one is not a run."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.exists():
        raise FileNotFoundError(
            f"{paths.root} is not a run folder (no config.json); "
            f"pre-train first: {suggested_command('python -m sclib pretrain --out {}', paths.root)}"
        )
    return load_config(paths.config), paths
