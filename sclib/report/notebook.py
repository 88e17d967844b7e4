"""What the notebooks compute beyond one call: runs of a study, tables, embeddings, cluster grids.

The notebooks stay thin (narrative, parameters, calls, figures); anything more lives here, so it
is tested like the rest of the package. Notebooks 02-05 read what ``evaluate`` and ``probe``
wrote into the run folders and recompute only what is missing, so a study renders on a CPU
from runs trained elsewhere.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sclib.core.metrics import cluster_purity, hungarian_match
from sclib.core.names import DATASETS
from sclib.eval.checks import l2_normalise, spread_problem
from sclib.report import plots
from sclib.report.plots import save_figure
from sclib.report.summary import caveat, run_warnings
from sclib.run import exports, files, records
from sclib.run.config import DEVICES, PRESETS, SEED_LIMIT, Config, ConfigError, load_config, typed_overrides
from sclib.run.paths import RunPaths, run_folders
from sclib.run.records import Evaluation, finished_metrics

# ----------------------------------------------------------------------------------------------
# The notebooks' parameters: checked at the top, before anything runs


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _optional(test):
    return lambda v: v is None or test(v)


def _is_seed(v: Any) -> bool:
    return _is_int(v) and 0 <= v < SEED_LIMIT


# name -> (what it must be, the check, how to pass it with papermill); one table for every notebook.
# Papermill's -p parses a value as a scalar, so lists and mappings must come as YAML through -y.
PARAMETERS: dict[str, tuple[str, Any, str]] = {
    # a name checked here, not later as a missing run folder ../runs/lab/NAME
    "dataset": (f"one of the data sets {', '.join(DATASETS)}", lambda v: isinstance(v, str) and v in DATASETS,
                "-p dataset digits"),
    "preset": (f"one of the recipe presets {', '.join(PRESETS)}", lambda v: isinstance(v, str) and v in PRESETS,
               "-p preset fast"),
    "run_dir": ("a folder path or None", _optional(lambda v: isinstance(v, (str, Path))), "-p run_dir runs/x"),
    "sweep_dir": ("a folder path or None", _optional(lambda v: isinstance(v, (str, Path))), "-p sweep_dir runs/x"),
    "config_file": ("a file path or None", _optional(lambda v: isinstance(v, (str, Path))),
                    "-p config_file my_recipe.yaml"),
    "grid": ("a YAML grid file path or None", _optional(lambda v: isinstance(v, (str, Path))),
             "-p grid ../ablations.yaml"),
    "seeds": ("a non-empty list of integer seeds in [0, 2**32)",
              lambda v: isinstance(v, list) and bool(v) and all(map(_is_seed, v)), '-y "seeds: [0, 1]"'),
    "config_overrides": ("a mapping of training parameters", lambda v: isinstance(v, dict),
                         '-y "config_overrides: {epochs: 1}"'),
    "train": ("True or False", lambda v: isinstance(v, bool), "-p train False"),
    "device": (", ".join(DEVICES[:-1]) + " or " + DEVICES[-1], lambda v: v in DEVICES, "-p device cpu"),
    "probe_epochs": ("a positive integer", lambda v: _is_int(v) and v > 0, "-p probe_epochs 20"),
    "max_points": ("a positive integer", lambda v: _is_int(v) and v > 0, "-p max_points 2000"),
    "clusters_per_grid": ("a positive integer", lambda v: _is_int(v) and v > 0, "-p clusters_per_grid 3"),
    "images_per_cluster": ("a positive integer", lambda v: _is_int(v) and v > 0, "-p images_per_cluster 10"),
    "show_seed": ("an integer seed in [0, 2**32) or None", _optional(_is_seed), "-p show_seed 1"),
    "seed": ("an integer in [0, 2**32)", _is_seed, "-p seed 0"),
}


def check_parameters(**values: Any) -> None:
    """Refuse a notebook parameter of the wrong kind in one line: what was expected, how to pass it.

    Papermill injects whatever it is given (``-p seeds 1`` is an int, ``-p seeds 01`` a string),
    and a string iterated as a list of seeds would silently train seeds 0 and 1. Every notebook
    passes all the parameters it declares, so a name papermill injected beyond them
    (``-p epochs 1``, which papermill only warns about) is refused too: see :func:`injected_names`.
    """
    unknown = sorted(injected_names() - set(values))
    if unknown:
        raise ConfigError(
            f"parameter(s) {', '.join(unknown)} are not parameters of this notebook, which takes "
            f"{', '.join(values)}; pass training parameters through config_overrides, e.g. "
            "-y \"config_overrides: {epochs: 1}\"")
    for name, value in values.items():
        expected, ok, how = PARAMETERS[name]
        if not ok(value):
            raise ConfigError(f"parameter {name} must be {expected}, got {value!r} ({type(value).__name__}); "
                              f"pass it as {how}")
    if isinstance(values.get("config_overrides"), dict):  # the training parameters: the Config's own types
        typed_overrides(values["config_overrides"])


# Papermill's Python translator heads the cell it injects with this comment (papermill 2.x).
INJECTED_CELL_HEADER = "# Parameters"


def injected_names(sources: list[str] | None = None) -> set[str]:
    """The names papermill assigned in the cells it injected into this kernel's session.

    ``sources``: the cells run so far (default: IPython's ``In`` history, empty outside a
    kernel). Papermill injects one cell headed :data:`INJECTED_CELL_HEADER` holding one plain
    assignment per parameter it was given; its names are read with ``ast``, never executed.
    """
    import ast

    if sources is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return set()
        shell = get_ipython()
        sources = list(shell.user_ns.get("In", [])) if shell is not None else []
    names: set[str] = set()
    for source in sources:
        if not isinstance(source, str) or not source.lstrip().startswith(INJECTED_CELL_HEADER):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names |= {target.id for node in tree.body if isinstance(node, ast.Assign)
                  for target in node.targets if isinstance(target, ast.Name)}
    return names


# ----------------------------------------------------------------------------------------------
# The runs of a study: one folder per seed


# Where notebooks run interactively put their runs when no run_dir is given: runs/lab/ of the
# repository, seen from the notebooks' folder (the kernel's working folder). A run elsewhere is
# the run_dir parameter; the notebook tests point this at a temporary folder in each kernel.
LAB_RUNS = Path("../runs/lab")


def lab_folder(name: str) -> Path:
    """The default run folder of notebooks run interactively: ``LAB_RUNS / NAME``."""
    return Path(LAB_RUNS) / name


def check_dataset(cfg: Config, dataset: str | None, run_dir: str | Path) -> None:
    """A notebook's ``dataset`` must be the run's, or its narrative and seed row would lie."""
    if dataset is not None and dataset != cfg.dataset:
        raise ConfigError(
            f"run folder {run_dir} holds a {cfg.dataset} run but the notebook was given dataset={dataset!r}; "
            f"pass dataset={cfg.dataset!r} or another run_dir"
        )


def open_runs(run_dir: str | Path, dataset: str | None = None) -> list[tuple[Config, RunPaths]]:
    """The finished or running seed runs in ``run_dir`` (or the single run it is)."""
    runs = []
    for folder in run_folders(run_dir):
        cfg = load_config(RunPaths(folder).config)
        check_dataset(cfg, dataset, folder)
        runs.append((cfg, RunPaths(folder)))
    return runs


def config_markdown(cfg: Config, seeds: list[int]) -> str:
    """The few settings a reader needs to place a run, as a Markdown list."""
    return "\n".join([
        f"- data set **{cfg.dataset}**, recipe **{cfg.preset}**, seeds {seeds}, "
        f"run folders `{Path(cfg.out).parent}/seed<N>`",
        f"- backbone {cfg.backbone}, image size {cfg.image_size}, heads {cfg.heads}",
        f"- {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.start_lr} -> {cfg.lr} -> {cfg.min_lr}",
        f"- temperatures: row {cfg.row_tau}, column {cfg.col_tau}; extra views {cfg.local_crops}; "
        f"NN queue {cfg.nn_queue or 'off'}",
        f"- kept checkpoints (probed in notebook 02): epochs {cfg.keep_epochs}",
        *([f"- fitted to the data: {cfg.adapted}"] if cfg.adapted else []),
        f"- {caveat(cfg)}",
    ])


def final_metrics(runs: list[tuple[Config, RunPaths]]):
    """Each seed's metrics.json (the scored head after the last epoch), one row per seed."""
    import pandas as pd

    rows = [{k: v for k, v in records.read_metrics(paths).items() if k != "warning"} for _, paths in runs]
    return pd.DataFrame([{"seed": cfg.seed, **row} for (cfg, _), row in zip(runs, rows)]).set_index("seed")


def warnings_markdown(runs: list[tuple[Config, RunPaths]]) -> str:
    """``run_warnings`` as a Markdown list under a bold heading; empty when there is nothing to say."""
    lines = run_warnings(runs)
    return "\n".join(["**Warnings**", "", *(f"- {line}" for line in lines)]) if lines else ""


def class_count(runs: list[tuple[Config, RunPaths]]) -> int:
    """The number of classes, as the first run recorded it (no data set needed)."""
    metrics = records.read_metrics(runs[0][1])
    if not _is_int(metrics.get("num_classes")):
        raise files.UnreadableFileError(f"{runs[0][1].metrics} lacks num_classes (written by an older "
                                            "version?); rerun evaluate or copy the run again")
    return int(metrics["num_classes"])


def pick_run(runs: list[tuple[Config, RunPaths]], seed: int | None = None) -> tuple[Config, RunPaths]:
    """The run of ``seed`` (the first run when None) for the figures drawn from one run."""
    if seed is None:
        return runs[0]
    for cfg, paths in runs:
        if cfg.seed == seed:
            return cfg, paths
    raise ConfigError(f"no run of seed {seed}; the runs have seeds {[cfg.seed for cfg, _ in runs]}")


def figures_dir(run_dir: str | Path) -> Path:
    """Figures of a study go beside its seed runs, in ``run_dir/figures``."""
    return RunPaths(Path(run_dir)).figures


def read_history(runs: list[tuple[Config, RunPaths]]):
    """Every seed's per-epoch history in one frame, with a ``seed`` column."""
    import pandas as pd

    frames = []
    for cfg, paths in runs:
        if not paths.history.exists():
            raise FileNotFoundError(f"{paths.history} does not exist; pre-train the run first (notebook 01)")
        epochs = cfg.epochs if finished_metrics(paths, cfg.epochs) is not None else None  # a finished run: all
        frames.append(records.read_history(paths, epochs).assign(seed=cfg.seed))
    return pd.concat(frames, ignore_index=True)


def save(fig, figures_dir: str | Path, stem: str):
    """Save a figure as ``figures_dir/stem.png`` and show it in the notebook by a link to that file.

    The executed notebook and its HTML page then refer to the one PNG instead of carrying their
    own copies, which keeps a study folder small.
    """

    from IPython.display import Image

    (png,) = save_figure(fig, figures_dir, stem, formats=("png",))
    return Image(url=Path(os.path.relpath(png)).as_posix(), embed=False)


# ----------------------------------------------------------------------------------------------
# Evaluation and probes: read when written for this epoch, recomputed otherwise


# ----------------------------------------------------------------------------------------------
# One run's eval split, from arrays.json and samples.png


@dataclass
class RunView:
    """A run's exported eval-split arrays: what notebooks 03-05 draw from."""

    cfg: Config
    paths: RunPaths
    labels: np.ndarray          # int [N]
    class_names: tuple[str, ...]
    heads: np.ndarray           # int [H, N]: every head's cluster of every image
    head_sizes: tuple[int, ...]
    scored_head: int            # index into heads
    epoch: int
    sample_index: np.ndarray    # eval indices of the exported sample images
    sample_images: np.ndarray   # uint8 [K, C, h, w]
    _features: np.ndarray | None = None

    @property
    def assigned(self) -> np.ndarray:
        return self.heads[self.scored_head].astype(np.int64)

    @property
    def features(self) -> np.ndarray:
        """float16 backbone features [N, D] (eval_features.npz, read when first asked for)."""
        if self._features is None:
            self._features = records.read_eval_features(self.paths)
        return self._features

    @property
    def head_size(self) -> int:
        return self.head_sizes[self.scored_head]

    @property
    def figures(self) -> Path:
        return self.paths.figures


def load_view(cfg: Config, paths: RunPaths, evaluation: Evaluation) -> RunView:
    """A run's eval split as ``evaluate`` exported it (arrays.json, samples.png), with its ``evaluation``
    (``sclib.eval.evaluate.ensure_evaluated`` evaluates first where eval.json is missing)."""
    data = records.read_arrays(paths)
    return RunView(cfg=cfg, paths=paths, labels=data["labels"], class_names=evaluation.classes,
                   heads=data["assigned"],
                   head_sizes=tuple(int(s) for s in data["head_sizes"]),
                   scored_head=evaluation.scored_head, epoch=evaluation.epoch,
                   sample_index=data["sample_index"], sample_images=data["sample_images"])


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` samples (t-SNE is quadratic-ish)."""
    if max_points <= 0:
        raise ValueError(f"max_points must be positive, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


# The fewest points an embedding is drawn for; perplexity and neighbours shrink to fit above it.
EMBED_MIN_POINTS = 5
EMBEDDINGS = {"tsne": "t-SNE", "umap": "UMAP"}


class TooLittleData(ValueError):
    """A step got fewer points (or less spread) than it needs; the message says which step and why."""


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """2-D t-SNE or UMAP of L2-normalised features, with the seconds spent (import, fit).

    Normalised features put the picture in the cosine geometry the heads and the kNN probe use.
    """
    with np.errstate(invalid="ignore"):  # non-finite rows are refused just below
        x = l2_normalise(np.asarray(features, dtype=np.float32))
    n = len(x)
    if method not in EMBEDDINGS:
        raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
    # perplexity and neighbours shrink to fit any larger set; rows that are all equal crash t-SNE
    problem = spread_problem(x, EMBED_MIN_POINTS, EMBEDDINGS[method])
    if problem:
        raise TooLittleData(problem)
    start = time.perf_counter()
    if method == "tsne":
        from sklearn.manifold import TSNE

        loaded = time.perf_counter()
        reducer = TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=min(30.0, (n - 1) / 3),
                       random_state=seed)
    else:
        with warnings.catch_warnings():  # umap's tqdm import warns about ipywidgets in notebooks
            warnings.simplefilter("ignore")
            import umap  # numba compiles on first use: measured separately

        loaded = time.perf_counter()
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
    with warnings.catch_warnings():  # a fixed random_state makes umap run single-threaded, and it says so
        warnings.filterwarnings("ignore", message="n_jobs value")
        xy = reducer.fit_transform(x)
    done = time.perf_counter()
    return np.asarray(xy), {"import_s": loaded - start, "fit_s": done - loaded}


def embedding_figures(view: RunView, idx: np.ndarray, method: str, figures: str | Path, seed: int = 0) -> list:
    """A 2-D embedding of the subsample ``idx``, coloured by true class and by cluster (fig4a_<method>*).

    The embedding is kept in the run's embeddings.json and reused while it fits (same method, seed,
    subsample, evaluated epoch and, where the features are at hand, the same features), so a
    committed study re-renders from a clone that has no features.
    """
    name = EMBEDDINGS[method]
    xy = cached_embedding(view, idx, method, seed)
    if xy is None:
        try:
            xy, seconds = embed_2d(view.features[idx], method, seed)
        except TooLittleData as skipped:
            print(skipped)
            return []
        store_embedding(view, idx, method, seed, xy)
        print(f"{name}: import {seconds['import_s']:.1f} s, fit {seconds['fit_s']:.1f} s")
    else:
        print(f"{name}: read from {view.paths.embeddings.name} (made from the same features)")
    clusters = [f"cluster {c}" for c in range(view.head_size)]
    return [save(plots.embedding_scatter(xy, view.labels[idx], view.class_names, title=f"{name}, true class"),
                 figures, f"fig4a_{method}"),
            save(plots.embedding_scatter(xy, view.assigned[idx], clusters, title=f"{name}, predicted cluster"),
                 figures, f"fig4a_{method}_clusters")]


def _embedding_key(view: RunView, idx: np.ndarray, method: str, seed: int) -> dict[str, np.ndarray]:
    """What an embedding was made from: the evaluated epoch, the subsample and its features' digest."""
    import hashlib

    key = {"epoch": np.array(view.epoch), "idx": np.asarray(idx, dtype=np.int64)}
    if view.paths.eval_features.exists():
        digest = hashlib.sha256(np.ascontiguousarray(view.features[idx]).tobytes()).hexdigest()
        key["features_sha256"] = np.array(digest)
    return {f"{method}_seed{seed}_{k}": v for k, v in key.items()}


def cached_embedding(view: RunView, idx: np.ndarray, method: str, seed: int) -> np.ndarray | None:
    """The stored 2-D embedding [n, 2] of ``idx`` if it was made from what the run holds now, else None."""
    stored = exports.read_embeddings(view.paths.embeddings)  # a damaged one reads as empty: it is drawn again
    prefix = f"{method}_seed{seed}_"
    xy = stored.get(prefix + "xy")
    if xy is None:
        return None
    for name, value in _embedding_key(view, idx, method, seed).items():
        if name not in stored or not np.array_equal(stored[name], value):
            return None
    return xy


def store_embedding(view: RunView, idx: np.ndarray, method: str, seed: int, xy: np.ndarray) -> Path:
    """Add (or replace) one embedding in the run's embeddings.json, written atomically."""
    prefix = f"{method}_seed{seed}_"
    kept = {k: v for k, v in exports.read_embeddings(view.paths.embeddings).items() if not k.startswith(prefix)}
    kept.update(_embedding_key(view, idx, method, seed))
    kept[prefix + "xy"] = np.asarray(xy, dtype=np.float32)
    return exports.write_embeddings(view.paths.embeddings, kept)


def cluster_table(
    labels: np.ndarray, assigned: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> list[dict[str, Any]]:
    """Per non-empty cluster: size, matched (or majority) class and purity, purest first."""
    labels, assigned = np.asarray(labels), np.asarray(assigned)
    purity = cluster_purity(labels, assigned)
    mapping = hungarian_match(labels, assigned)
    rows = []
    for cluster, p in purity.items():
        members = labels[assigned == cluster]
        counts = np.bincount(members)
        majority = int(counts.argmax())
        cls = mapping.get(cluster, majority)
        row = {"cluster": cluster, "size": int(members.size), "class": int(cls), "label": str(class_names[cls]),
               "purity": float(p), "matched": cluster in mapping, "majority": majority}
        if majority != cls:  # the matching can hand a cluster a class it barely holds: say what it does hold
            row["mostly"] = (str(class_names[majority]), float(counts[majority] / members.size))
        rows.append(row)
    rows.sort(key=lambda r: (-r["purity"], -r["size"], r["cluster"]))
    return rows


def best_and_worst(table: list[dict[str, Any]], count: int = 3, min_size: int = 5) -> tuple[list[dict], list[dict]]:
    """The ``count`` purest and least pure clusters (disjoint), ignoring tiny ones when possible.

    A cluster of two images is trivially pure; it says nothing about what the model learnt.
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if not table:
        raise ValueError("the cluster table is empty; there are no clusters to show")
    big = [r for r in table if r["size"] >= min_size] or list(table)
    # With fewer than 2 * count clusters the two grids share them out instead of repeating any.
    best = big[:min(count, (len(big) + 1) // 2)]
    rest = big[len(best):]
    worst = sorted(rest, key=lambda r: (r["purity"], -r["size"], r["cluster"]))[:count] or best[-1:]
    return best, worst


def grid_rows(clusters: list[dict[str, Any]], assigned: np.ndarray, available: np.ndarray | None = None,
              per_cluster: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Rows for ``plots.cluster_grid``: a random sample of each cluster's images.

    ``available`` lists the eval indices whose pixels are at hand (the sample ``evaluate``
    exports); the rows' ``indices`` then point into that list, as the exported images do.
    """
    assigned = np.asarray(assigned)
    available = np.arange(len(assigned)) if available is None else np.asarray(available)
    rng = np.random.default_rng(seed)
    rows = []
    for r in clusters:
        members = np.flatnonzero(assigned[available] == r["cluster"])
        pick = np.sort(rng.choice(members, size=min(per_cluster, members.size), replace=False))
        rows.append({"cluster": r["cluster"], "indices": pick.tolist(), "label": r["label"], "purity": r["purity"],
                     **({"mostly": r["mostly"]} if "mostly" in r else {})})
    return rows
