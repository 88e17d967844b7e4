"""What the notebooks compute beyond one call: run configs, tables, embeddings, cluster grids.

The notebooks stay thin (narrative, parameters, calls, figures); anything more lives here, so it
is tested like the rest of the package.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sclib import seed as seed_report
from sclib.config import Config, ConfigError, make_config

# ----------------------------------------------------------------------------------------------
# Configs and run folders


def fit_milestones(milestones: list[int], epochs: int, points: int = 4) -> list[int]:
    """The preset's milestones that fall inside a (shortened) run, or evenly spaced ones.

    A probe curve needs a few points; a 4-epoch run with the 800-epoch milestones would have
    only its last checkpoint.
    """
    inside = sorted({m for m in milestones if 1 <= m <= epochs})
    if len(inside) >= min(points, epochs) - 1 and inside:
        return sorted(set(inside) | {epochs})
    return sorted({max(1, round(epochs * k / points)) for k in range(1, points + 1)})


def run_config(dataset: str, preset: str, run_dir: str | Path, **overrides: Any) -> Config:
    """A validated config for a study run; ``None`` overrides keep the preset's value."""
    chosen = {k: v for k, v in overrides.items() if v is not None}
    cfg = make_config(dataset, preset, **{**chosen, "out": str(run_dir)})
    if "milestones" not in chosen:
        cfg.milestones = fit_milestones(cfg.milestones, cfg.epochs)
    return cfg.validate()


@dataclass
class RunView:
    """A run's model outputs on its eval split: what notebooks 03-05 draw from."""

    cfg: Config
    run_dir: Path
    images: np.ndarray          # uint8 [N, C, H, W]
    labels: np.ndarray          # int [N]
    class_names: tuple[str, ...]
    features: np.ndarray        # backbone features [N, D]
    logits: list[np.ndarray]    # per head
    head: int                   # evaluated head
    epoch: int

    @property
    def assigned(self) -> np.ndarray:
        return self.logits[self.head].argmax(axis=1)

    @property
    def head_size(self) -> int:
        return int(self.logits[self.head].shape[1])

    @property
    def figures(self) -> Path:
        return self.run_dir / "figures"


def check_dataset(cfg: Config, dataset: str | None, run_dir: str | Path) -> None:
    """A notebook's ``dataset`` must be the run's, or its narrative and seed row would lie."""
    if dataset is not None and dataset != cfg.dataset:
        raise ConfigError(
            f"run folder {run_dir} holds a {cfg.dataset} run but the notebook was given dataset={dataset!r}; "
            f"pass dataset={cfg.dataset!r} or another run_dir"
        )


def load_view(run_dir: str | Path, dataset: str | None = None, device: str = "auto") -> RunView:
    """Load a finished run's newest model and run it once over the eval split."""
    from sclib.evaluate import predict
    from sclib.runs import augment_config, load_data, load_model, open_run, resolve_device

    cfg, paths = open_run(run_dir)
    check_dataset(cfg, dataset, run_dir)
    data = load_data(cfg)
    dev = resolve_device(device)
    model, epoch = load_model(run_dir, data.info, device=dev)
    preds = predict(model, data.eval_images, augment_config(cfg, data.info), dev)
    return RunView(cfg=cfg, run_dir=Path(run_dir), images=data.eval_images.numpy(), labels=data.eval_labels.numpy(),
                   class_names=tuple(data.info.classes), features=preds.features, logits=preds.logits,
                   head=cfg.evaluated_head(len(data.info.classes)), epoch=epoch)


def open_study_run(run_dir: str | Path, dataset: str | None = None) -> Config:
    """A run's config, checked against the notebook's ``dataset`` parameter."""
    from sclib.runs import open_run

    cfg, _ = open_run(run_dir)
    check_dataset(cfg, dataset, run_dir)
    return cfg


def figures_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "figures"


def class_count(cfg: Config) -> int:
    from sclib.data import dataset_info

    return len(dataset_info(cfg.dataset, cfg.data_root).classes)


def config_markdown(cfg: Config, preset: str) -> str:
    """The few settings a reader needs to place a run, as a Markdown list."""
    return "\n".join([
        f"- data set **{cfg.dataset}**, preset **{preset}**, run folder `{cfg.out}`",
        f"- backbone {cfg.backbone}, image size {cfg.image_size}, heads {cfg.heads}",
        f"- {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.start_lr} -> {cfg.lr} -> {cfg.min_lr}",
        f"- temperatures: row {cfg.row_tau}, column {cfg.col_tau}; local crops {cfg.local_crops}",
        f"- milestones (probed in notebook 02): {cfg.milestones}",
        f"- {caveat(preset, cfg)}",
    ])


def read_history(run_dir: str | Path):
    import pandas as pd

    path = Path(run_dir) / "history.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pre-train the run first (notebook 01)")
    return pd.read_csv(path)


def save(fig, figures_dir: str | Path, stem: str):
    """Save a figure as PNG and SVG under its stable name and hand it back for display."""
    from sclib.plots import save_figure

    save_figure(fig, figures_dir, stem)
    return fig


# ----------------------------------------------------------------------------------------------
# Tables next to the seed report


def clustering_rows(report: dict[str, Any], dataset: str, epochs: int | None = None) -> dict[str, dict[str, float]]:
    """The evaluated head, the k-means baselines and the seed's Table 1 row, all as fractions."""
    head = report["evaluated_head"]
    h = report["heads"][head]
    rows = {f"this run: head {head} ({h['head_size']} clusters)"
            + (f", {epochs} epochs" if epochs else ""): h,
            "k-means on backbone features": report["kmeans_features"],
            "k-means on pixels": report["kmeans_pixels"]}
    found = seed_report.table1_row(dataset)
    if found is not None:
        label, percent = found
        rows[label] = seed_report.as_fractions(percent)
    return rows


def heads_rows(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """One row per head, marking the evaluated one."""
    rows = {}
    for i, h in enumerate(report["heads"]):
        mark = " (evaluated)" if i == report["evaluated_head"] else ""
        rows[f"head {i}: {h['head_size']} clusters, {h['clusters_used']} used{mark}"] = h
    return rows


def probe_summary(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """Top-1 / top-3 of each probe at the newest probed epoch."""
    import pandas as pd

    path = Path(run_dir) / "probe.csv"
    if not path.exists():
        return {}
    df = pd.read_csv(path)
    last = df[df["epoch"] == df["epoch"].max()]
    return {str(r["probe"]): {"epoch": int(r["epoch"]), "top1": float(r["top1"]), "top3": float(r["top3"])}
            for _, r in last.iterrows()}


# ----------------------------------------------------------------------------------------------
# Embeddings and cluster grids


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` samples (t-SNE is quadratic-ish)."""
    if max_points <= 0:
        raise ValueError(f"max_points must be positive, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """2-D t-SNE or UMAP of L2-normalised features, with the seconds spent (import, fit).

    Normalised features put the picture in the cosine geometry the heads and the kNN probe use.
    """
    from sclib.evaluate import l2_normalise

    x = l2_normalise(np.asarray(features, dtype=np.float32))
    n = len(x)
    if n < 5:
        raise ValueError(f"an embedding needs at least 5 points, got {n}")
    start = time.perf_counter()
    if method == "tsne":
        from sklearn.manifold import TSNE

        loaded = time.perf_counter()
        reducer = TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=min(30.0, (n - 1) / 3),
                       random_state=seed)
    elif method == "umap":
        with warnings.catch_warnings():  # umap's tqdm import warns about ipywidgets in notebooks
            warnings.simplefilter("ignore")
            import umap  # numba compiles on first use: measured separately

        loaded = time.perf_counter()
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
    else:
        raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
    with warnings.catch_warnings():  # a fixed random_state makes umap run single-threaded, and it says so
        warnings.filterwarnings("ignore", message="n_jobs value")
        xy = reducer.fit_transform(x)
    done = time.perf_counter()
    return np.asarray(xy), {"import_s": loaded - start, "fit_s": done - loaded}


def cluster_table(labels: np.ndarray, assigned: np.ndarray, class_names: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Per non-empty cluster: size, matched (or majority) class and purity, purest first."""
    from sclib.metrics import cluster_purity, hungarian_match

    labels, assigned = np.asarray(labels), np.asarray(assigned)
    purity = cluster_purity(labels, assigned)
    mapping = hungarian_match(labels, assigned)
    rows = []
    for cluster, p in purity.items():
        members = labels[assigned == cluster]
        counts = np.bincount(members)
        majority = int(counts.argmax())
        cls = mapping.get(cluster, majority)
        label = str(class_names[cls])
        if majority != cls:  # the matching can hand a cluster a class it barely holds: say what it does hold
            label += f", mostly {class_names[majority]} ({counts[majority] / members.size:.0%})"
        rows.append({"cluster": cluster, "size": int(members.size), "class": int(cls), "label": label,
                     "purity": float(p), "matched": cluster in mapping, "majority": majority})
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


def grid_rows(clusters: list[dict[str, Any]], assigned: np.ndarray, per_cluster: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Rows for ``plots.cluster_grid``: a random sample of each cluster's images."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in clusters:
        members = np.flatnonzero(np.asarray(assigned) == r["cluster"])
        pick = np.sort(rng.choice(members, size=min(per_cluster, members.size), replace=False))
        rows.append({"cluster": r["cluster"], "indices": pick.tolist(), "label": r["label"], "purity": r["purity"]})
    return rows


def comparable(cfg: Config) -> bool:
    """Only the seed recipe (ResNet-18, 800 epochs) can be read against Table 1."""
    return cfg.backbone == "resnet18" and cfg.epochs == seed_report.TABLE1_EPOCHS


def caveat(preset: str, cfg: Config | None) -> str:
    if cfg is not None and comparable(cfg):
        return "The run follows the seed's recipe (ResNet-18, 800 epochs): its numbers are comparable with Table 1."
    what = f"backbone {cfg.backbone}, {cfg.epochs} epochs" if cfg is not None else "a shortened recipe"
    return (f"WARNING: preset '{preset}' ({what}) numbers are NOT comparable with the seed's 800-epoch "
            "ResNet-18; they check that the pipeline works, not the seed's results. Use --preset seed on a GPU.")
