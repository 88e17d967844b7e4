"""Reading a run's files, each checked when read and a damaged one named in one line; whether a
run has finished. No torch: summaries and the front page read runs with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib.run.config import Config, ConfigError
from sclib.run.files import (
    UnreadableFileError,
    display_text,
    first_line,
    read_csv_rows,
    read_json,
    read_record,
    suggested_command,
)
from sclib.run.paths import RunPaths

# eval.json's k-means baselines: key -> what the tables call them.
BASELINES = (("kmeans_features", "k-means on backbone features"), ("kmeans_pixels", "k-means on pixels"))
# The kNN probe's neighbours (probe.csv records the k that voted; older files lack the column).
KNN_K = 20


@dataclass(frozen=True)
class Evaluation:
    """One run's eval.json (``sclib.eval.evaluate`` writes it), typed, with the seed that made it.

    Metrics are fractions. ``heads`` holds every head's metrics in the order of the config's
    heads; ``scored_head`` indexes the one the study scores (size = number of classes; stored
    in eval.json as ``evaluated_head``). A skipped k-means baseline has None for its metrics.
    """

    seed: int
    epoch: int
    scored_head: int
    heads: list[dict[str, Any]]
    kmeans_features: dict[str, Any]
    kmeans_pixels: dict[str, Any]
    split: str = "test"
    classes: tuple[str, ...] = ()
    eval_images: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def scored(self) -> dict[str, Any]:
        """The scored head's metrics (``nmi``, ``ami``, ``ari``, ``acc``, ``clusters_used``, ...)."""
        return self.heads[self.scored_head]

    @classmethod
    def from_json(cls, record: dict[str, Any], seed: int) -> Evaluation:
        return cls(seed=seed, epoch=int(record["epoch"]), scored_head=int(record["evaluated_head"]),
                   heads=list(record["heads"]), kmeans_features=record["kmeans_features"],
                   kmeans_pixels=record["kmeans_pixels"], split=record.get("split", "test"),
                   classes=tuple(display_text(str(c)) for c in record.get("classes", ())),
                   eval_images=record.get("eval_images"),
                   warnings=tuple(record.get("warnings", ())))


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
    fix = _fix(paths, "probe") + " (with --all-kept)"
    return _read_table(paths.probe, ("epoch", "probe", "top1", "top3"), ("epoch", "top1", "top3"), fix)


FEATURE_KEYS = ("features",)


def read_arrays(paths: RunPaths) -> dict[str, Any]:
    """arrays.json and samples.png (``sclib.run.exports``), read whole and checked (a cut or
    mismatched file raises UnreadableFileError naming it)."""
    from sclib.run import exports

    return exports.read_arrays(paths.arrays, paths.samples, _fix(paths, "evaluate"))


def read_eval_features(paths: RunPaths) -> Any:
    """eval_features.npz's float16 (or float32) features [N, D] of the eval split.

    Runs evaluated before the features had a file of their own hold them in arrays.npz.
    """
    if not paths.eval_features.exists() and paths.legacy_arrays.exists():
        older = read_npz(paths.legacy_arrays, (), _fix(paths, "evaluate"))
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
        raise UnreadableFileError(f"{path} is damaged ({type(err).__name__}: {first_line(err)}); "
                                  f"{fix}") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise UnreadableFileError(f"{path} is damaged or from another version (it lacks "
                                  f"{', '.join(missing)}); {fix}")
    return data
