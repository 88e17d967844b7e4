"""The study: helpers the notebooks call, the ablation sweep, and the notebook runner.

The notebooks stay thin (narrative, parameters, calls, figures); whatever they compute that is
more than one call lives here, so it is tested like the rest of the package. The runner
(``python -m sclib study`` / ``sweep``) executes them with papermill in a kernel of the current
interpreter and turns them into an HTML report next to a ``summary.md`` with the seed's numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import os
import re
import sys
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sclib import seed as seed_report
from sclib.config import Config, ConfigError, PRESETS, coerce, make_config

STUDY_NOTEBOOKS = ("01_pretrain", "02_linear_probe", "03_clustering_metrics", "04_embeddings", "05_cluster_images")
SWEEP_NOTEBOOK = "06_ablations"
ALL_NOTEBOOKS = (*STUDY_NOTEBOOKS, SWEEP_NOTEBOOK)
KERNEL_NAME = "sclib"

# Figures every study run must produce (stems in the run's figures/ folder).
STUDY_FIGURES = (
    "fig1_training", "fig2_probe", "confusion", "fig4a_tsne", "fig4a_tsne_clusters", "fig4a_umap",
    "fig4a_umap_clusters", "fig4b_histogram", "fig3_clusters_best", "fig3_clusters_worst",
)
SWEEP_FIGURES = ("fig5_ablations",)

# Where the runner (the real job) departs from the notebooks' quick defaults: the seed's probe.
RUNNER_DEFAULTS: dict[str, Any] = {"probe_epochs": 100}

# Notebook parameters that are Config fields: the runner fills them from the preset.
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(Config))


class StudyError(RuntimeError):
    """A study or sweep that cannot go on; the message names the notebook / variant and the cause."""


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


# ----------------------------------------------------------------------------------------------
# Ablation sweep

# The grid notebook 06 builds when it finds no sweep: three variants that finish in a minute.
TINY_GRID: dict[str, Any] = {
    "base": {"image_size": 8, "mlp_hidden": 128},
    "variants": {"base": {}, "batch 128": {"batch_size": 128}, "heads 1 x 10": {"heads": [10]}},
}


@dataclass(frozen=True)
class Variant:
    name: str
    folder: str
    cfg: Config


def slug(name: str) -> str:
    """A variant's folder name: lower-case words joined by dashes ("temperatures-0-07-0-03")."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not text:
        raise ConfigError(f"variant name {name!r} has no letters or digits to name its folder by")
    return text


def load_grid(grid: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """Read and shape-check an ablation grid: ``base`` (shared overrides) and ``variants``."""
    import yaml

    if grid is None:
        return json.loads(json.dumps(TINY_GRID))
    if isinstance(grid, (str, Path)):
        path = Path(grid)
        if not path.exists():
            raise FileNotFoundError(f"ablation grid {path} does not exist; see ablations.yaml for an example")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"ablation grid {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        where = str(path)
    else:
        data, where = grid, "ablation grid"
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict) or not data["variants"]:
        raise ConfigError(f"{where} needs a mapping 'variants: {{name: {{field: value}}}}' with at least one variant")
    extra = sorted(set(data) - {"base", "variants"})
    if extra:
        raise ConfigError(f"{where} has unknown top-level key(s) {extra}; only 'base' and 'variants' are read")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: 'base' must be a mapping of config fields")
    for name, values in data["variants"].items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}: variant {name!r} must be a mapping of config fields (or empty)")
    return {"base": base, "variants": {str(k): (v or {}) for k, v in data["variants"].items()}}


def sweep_variants(dataset: str, grid: str | Path | dict[str, Any] | None, sweep_dir: str | Path,
                   preset: str = "fast", **overrides: Any) -> list[Variant]:
    """Every variant's validated config; precedence: preset < grid base < overrides < variant.

    All configs are checked before any training starts, so a typo in the last variant does not
    surface hours into a sweep.
    """
    spec = load_grid(grid)
    chosen = {k: v for k, v in overrides.items() if v is not None}
    variants, folders = [], {}
    for name, values in spec["variants"].items():
        folder = slug(name)
        if folder in folders:
            raise ConfigError(f"variants {folders[folder]!r} and {name!r} would share the folder {folder}; rename one")
        folders[folder] = name
        try:
            cfg = run_config(dataset, preset, Path(sweep_dir) / folder, **{**spec["base"], **chosen, **values})
        except ConfigError as err:
            raise ConfigError(f"variant {name!r}: {err}") from None
        variants.append(Variant(name, folder, cfg))
    return variants


def is_finished(run_dir: str | Path, epochs: int) -> bool:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return False
    try:
        return int(json.loads(path.read_text()).get("epoch", 0)) >= epochs
    except (ValueError, OSError):
        return False


def run_sweep(dataset: str, grid: str | Path | dict[str, Any] | None, sweep_dir: str | Path,
              preset: str = "fast", progress: bool = False, log=print, **overrides: Any) -> list[dict[str, Any]]:
    """Pre-train every variant in its own run folder, skipping finished ones (rerun to resume)."""
    from sclib.files import write_json
    from sclib.train import pretrain

    sweep_dir = Path(sweep_dir)
    variants = sweep_variants(dataset, grid, sweep_dir, preset, **overrides)
    write_json(sweep_dir / "sweep.json", {
        "dataset": dataset, "preset": preset,
        "variants": [{"name": v.name, "folder": v.folder, "config": v.cfg.to_dict()} for v in variants],
    })
    done = []
    for v in variants:
        if is_finished(v.cfg.out, v.cfg.epochs):
            status = "skipped (finished)"
        else:
            start = time.perf_counter()
            pretrain(v.cfg, progress=progress)
            status = f"trained in {time.perf_counter() - start:.0f} s"
        log(f"sweep: {v.name} -> {v.folder}: {status}")
        done.append({"variant": v.name, "folder": v.folder, "status": status})
    return done


def ablation_table(sweep_dir: str | Path):
    """One row per finished variant (fractions), in the grid's order, with the seed's ACC."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    index = sweep_dir / "sweep.json"
    if not index.exists():
        raise FileNotFoundError(f"{index} does not exist; run the sweep first: python -m sclib sweep --grid ablations.yaml")
    rows = []
    for v in json.loads(index.read_text())["variants"]:
        metrics = sweep_dir / v["folder"] / "metrics.json"
        if not metrics.exists():
            continue
        m = json.loads(metrics.read_text())
        seed_row = seed_report.TABLE2.get(v["name"], {})
        rows.append({"variant": v["name"], **{k: float(m[k]) for k in seed_report.METRICS},
                     "epochs": int(m.get("epoch", 0)),
                     "seed_acc": seed_row["acc"] / 100.0 if seed_row else float("nan")})
    if not rows:
        raise FileNotFoundError(f"no variant in {sweep_dir} has finished (no metrics.json); run the sweep first")
    return pd.DataFrame(rows)


def ablation_markdown(table) -> str:
    """The sweep in the layout of the seed's Table 2 (percent), with the seed's STL-10 ACC."""
    lines = ["| variant | NMI | AMI | ARI | ACC | epochs | seed ACC (STL-10, 300 ep) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        seed_acc = "n/a" if not np.isfinite(r["seed_acc"]) else f"{100 * r['seed_acc']:.2f}"
        lines.append(f"| {r['variant']} | " + " | ".join(f"{100 * r[k]:.2f}" for k in seed_report.METRICS)
                     + f" | {int(r['epochs'])} | {seed_acc} |")
    return "\n".join(lines) + "\n"


def seed_table2_markdown() -> str:
    lines = ["| variant | NMI | AMI | ARI | ACC |", "|---|---:|---:|---:|---:|"]
    for name, row in seed_report.TABLE2.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in seed_report.METRICS) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# The runner


def notebooks_dir() -> Path:
    """The repository's notebooks/ (next to the package in a checkout or editable install)."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """A kernelspec that starts this very interpreter, installed into ``sys.prefix`` if missing.

    Papermill would otherwise start whatever "python3" the Jupyter paths name first, which may
    be another environment without sclib. If ``name`` is taken by another interpreter (e.g. in
    the user's Jupyter folder, which wins over ``sys.prefix``), a name unique to this
    interpreter is used instead.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def ours(kernel: str) -> bool | None:
        try:
            spec = KernelSpecManager().get_kernel_spec(kernel)
        except NoSuchKernel:
            return None
        return bool(spec.argv) and os.path.abspath(spec.argv[0]) == os.path.abspath(sys.executable)

    candidates = [name, f"{name}-{abs(hash(os.path.abspath(sys.executable))) % 10**8:08d}"]
    for kernel in candidates:
        state = ours(kernel)
        if state:
            return kernel
        if state is None or kernel == candidates[-1]:
            from ipykernel.kernelspec import install

            try:
                install(kernel_name=kernel, prefix=sys.prefix, display_name=f"Python (sclib, {Path(sys.prefix).name})")
            except OSError as err:
                raise StudyError(f"cannot install the Jupyter kernel {kernel!r} into {sys.prefix}: {err}") from None
            if ours(kernel):
                return kernel
    raise StudyError(f"no Jupyter kernel for {sys.executable} could be set up; install one with "
                     f"`{sys.executable} -m ipykernel install --sys-prefix --name {name}`")


def parse_params(items: list[str] | None, known: set[str]) -> dict[str, Any]:
    """``key=value`` strings -> values (YAML scalars/lists; Config fields get their declared type)."""
    import yaml

    hints = typing.get_type_hints(Config)
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param {item!r} is not key=value, e.g. --param epochs=2")
        if key not in known and key not in hints:
            raise ConfigError(f"--param {key} is not a notebook parameter or config field; known: {', '.join(sorted(known | set(hints)))}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key] = coerce(key, value, hints[key]) if key in hints and value is not None else value
    return out


def notebook_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


@dataclass
class NotebookJob:
    name: str
    source: Path
    parameters: dict[str, Any]


def route_parameters(sources: dict[str, Path], base: dict[str, Any], user: dict[str, Any]) -> list[NotebookJob]:
    """Each notebook gets the parameters it declares; Config fields it lacks go into ``config_overrides``."""
    jobs = []
    for name, path in sources.items():
        declared = notebook_parameters(path)
        params = {k: v for k, v in {**base, **user}.items() if k in declared}
        if "config_overrides" in declared:
            extra = {k: v for k, v in user.items() if k in CONFIG_FIELDS and k not in declared}
            params["config_overrides"] = extra
        jobs.append(NotebookJob(name, path, params))
    return jobs


def execute(job: NotebookJob, out: Path, kernel: str, log=print) -> Path:
    """Run one notebook into ``out``; on failure keep it (with the traceback) and raise StudyError."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    target = out / f"{job.name}.ipynb"
    start = time.perf_counter()
    try:
        # Relative paths, so the executed notebooks record no folder of this machine.
        papermill.execute_notebook(os.path.relpath(job.source), os.path.relpath(target), parameters=job.parameters,
                                   kernel_name=kernel, cwd=str(out), progress_bar=False, log_output=False)
    except PapermillExecutionError as err:
        export_html(target)
        first = (err.source or "").strip().splitlines()
        where = f"cell {err.exec_count}" + (f" ({first[0][:60]!r})" if first else "")
        raise StudyError(f"notebook {job.name} failed in {where}: {err.ename}: {_first_line(err.evalue)}; "
                         f"traceback kept in {target}") from None
    except Exception as err:  # the kernel died or could not start
        if target.exists():
            export_html(target)
        raise StudyError(f"notebook {job.name} could not be executed: {type(err).__name__}: {_first_line(str(err))}") from None
    export_html(target)
    log(f"study: {job.name} done in {time.perf_counter() - start:.0f} s")
    return target


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def export_html(notebook: Path) -> Path:
    """A self-contained HTML page of an executed notebook (images embedded, no prompts)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def device_description(run_dir: Path) -> str:
    path = run_dir / "config.json"
    if not path.exists():
        return "unknown (no run yet)"
    record = json.loads(path.read_text())
    dev = record.get("config", {}).get("device", "auto")
    name = record.get("provenance", {}).get("device", "")
    resolved = dev
    if dev == "auto":
        import torch

        resolved = "cuda" if torch.cuda.is_available() else "cpu"
    return f"{resolved} ({name})" if name and name != resolved else resolved


def comparable(cfg: Config) -> bool:
    """Only the seed recipe (ResNet-18, 800 epochs) can be read against Table 1."""
    return cfg.backbone == "resnet18" and cfg.epochs == seed_report.TABLE1_EPOCHS


def caveat(preset: str, cfg: Config | None) -> str:
    if cfg is not None and comparable(cfg):
        return "The run follows the seed's recipe (ResNet-18, 800 epochs): its numbers are comparable with Table 1."
    what = f"backbone {cfg.backbone}, {cfg.epochs} epochs" if cfg is not None else "a shortened recipe"
    return (f"WARNING: preset '{preset}' ({what}) numbers are NOT comparable with the seed's 800-epoch "
            "ResNet-18; they check that the pipeline works, not the seed's results. Use --preset seed on a GPU.")


def write_summary(out: Path, run_dir: Path, dataset: str, preset: str) -> Path:
    """``summary.md``: this run's metrics next to the seed's Table 1 row, plus probes and caveats."""
    from sclib.config import load_config
    from sclib.plots import metrics_table_markdown

    cfg = load_config(run_dir / "config.json")
    report = json.loads((run_dir / "eval.json").read_text())
    lines = [f"# Self-Classifier study: {dataset}", "",
             f"- preset: **{preset}**; device: **{device_description(run_dir)}**",
             f"- backbone {cfg.backbone}, {cfg.epochs} epochs, batch {cfg.batch_size}, heads {cfg.heads}, "
             f"temperatures (row {cfg.row_tau}, column {cfg.col_tau})",
             f"- run folder: `{os.path.relpath(run_dir, out)}/`", "", f"> {caveat(preset, cfg)}", "",
             "## Clustering on the eval split (percent)", "",
             metrics_table_markdown(clustering_rows(report, dataset, cfg.epochs), label="run"),
             "## All heads", "", metrics_table_markdown(heads_rows(report), label="head")]
    probes = probe_summary(run_dir)
    if probes:
        probe_epochs = json.loads((out / "study.json").read_text()).get("probe_epochs") if (out / "study.json").exists() else None
        lines += ["## Probes on frozen backbone features (newest milestone)", "",
                  f"Linear probe: {probe_epochs or 'see notebook 02'} epochs (the seed: 100); kNN: 20 neighbours, no training.", "",
                  "| probe | epoch | top-1 | top-3 |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {p['epoch']} | {100 * p['top1']:.2f} | {100 * p['top3']:.2f} |" for name, p in probes.items()]
        lines.append("")
    lines += ["## Seed report, Table 1 (ResNet-18, 800 epochs, percent)", "",
              "| dataset | NMI | AMI | ARI | ACC |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {seed_report.TABLE1_NAMES[k]} | " + " | ".join(f"{row[m]:.4f}" for m in seed_report.METRICS) + " |"
              for k, row in seed_report.TABLE1.items()]
    lines.append("")
    target = out / "summary.md"
    target.write_text("\n".join(lines), encoding="utf-8")
    return target


def write_index(out: Path, title: str, notes: list[str], failed: str | None = None) -> Path:
    """``index.html`` linking every notebook report and figure found in ``out``."""
    items = []
    for name in ALL_NOTEBOOKS:
        nb = out / f"{name}.ipynb"
        if not nb.exists():
            continue
        status = " <strong>(failed: see the traceback)</strong>" if name == failed else ""
        items.append(f'<li><a href="{name}.html">{name}</a> (<a href="{name}.ipynb">notebook</a>){status}</li>')
    figures = sorted(p for p in out.rglob("figures/*.png") if "checkpoints" not in p.parts)
    thumbs = [f'<figure><a href="{html.escape(p.relative_to(out).as_posix())}"><img src="{html.escape(p.relative_to(out).as_posix())}" '
              f'alt="{p.stem}"></a><figcaption>{p.stem}</figcaption></figure>' for p in figures]
    summary = out / "summary.md"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}}
.warn{{background:#fff3cd;border:1px solid #e0c060;padding:.6em}}
figure{{display:inline-block;margin:.5em;text-align:center}} img{{max-width:22em;max-height:16em}}
pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style></head><body>
<h1>{html.escape(title)}</h1>
{''.join(f'<p class="{"warn" if n.startswith("WARNING") else "note"}">{html.escape(n)}</p>' for n in notes)}
<h2>Reports</h2><ul>{''.join(items)}</ul>
{f'<h2>Summary</h2><p><a href="summary.md">summary.md</a></p><pre>{html.escape(summary.read_text())}</pre>' if summary.exists() else ''}
<h2>Figures</h2>{''.join(thumbs) or '<p>none yet</p>'}
</body></html>
"""
    target = out / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


def _sources(names: tuple[str, ...], folder: Path | None) -> dict[str, Path]:
    folder = Path(folder) if folder else notebooks_dir()
    sources = {name: folder / f"{name}.ipynb" for name in names}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise StudyError(f"notebook(s) {', '.join(missing)} not found; pass --notebooks with the folder holding them")
    return sources


def _all_declared(sources: dict[str, Path]) -> set[str]:
    return set().union(*(notebook_parameters(p) for p in sources.values())) - {"config_overrides"}


def _run_cfg(run_dir: Path) -> Config | None:
    from sclib.config import load_config

    return load_config(run_dir / "config.json") if (run_dir / "config.json").exists() else None


def run_study(dataset: str, out: str | Path, preset: str = "fast", params: list[str] | None = None,
              notebooks: str | Path | None = None, kernel: str | None = None, log=print) -> Path:
    """Execute notebooks 01-05 into ``out`` and write their HTML, ``index.html`` and ``summary.md``."""
    out = Path(out).resolve()
    sources = _sources(STUDY_NOTEBOOKS, notebooks)
    user = parse_params(params, _all_declared(sources))
    for key in ("dataset", "run_dir", "preset"):
        if key in user:
            raise ConfigError(f"--param {key} is set by the runner; use --dataset, --out or --preset instead")
    run_dir = out / "run"
    cfg = run_config(dataset, preset, run_dir, **{k: v for k, v in user.items() if k in CONFIG_FIELDS})
    out.mkdir(parents=True, exist_ok=True)
    # The notebooks run with ``out`` as their working folder, so the run folder is just "run".
    base: dict[str, Any] = {"dataset": dataset, "preset": preset, "run_dir": run_dir.name}
    # Config-valued notebook parameters come from the preset, not from the notebooks' quick defaults.
    base.update({k: getattr(cfg, k) for k in CONFIG_FIELDS if k not in ("dataset", "out")})
    base.update(RUNNER_DEFAULTS)
    jobs = route_parameters(sources, base, user)
    (out / "study.json").write_text(json.dumps({"dataset": dataset, "preset": preset, "params": user,
                                                "probe_epochs": user.get("probe_epochs", RUNNER_DEFAULTS["probe_epochs"]),
                                                "config": {**cfg.to_dict(), "out": run_dir.name}}, indent=2, default=str))
    kernel = kernel or ensure_kernel()
    title = f"Self-Classifier study: {dataset} (preset {preset})"
    log(f"study: {dataset}, preset {preset}, {cfg.epochs} epochs, backbone {cfg.backbone}, into {out}")
    for job in jobs:
        try:
            execute(job, out, kernel, log)
        except StudyError:
            write_index(out, title, [f"Stopped at {job.name}."], failed=job.name)
            raise
    write_summary(out, run_dir, dataset, preset)
    notes = [f"Preset: {preset}; device: {device_description(run_dir)}.", caveat(preset, _run_cfg(run_dir))]
    write_index(out, title, notes)
    return out


def run_sweep_study(dataset: str, grid: str | Path, out: str | Path, preset: str = "fast",
                    params: list[str] | None = None, notebooks: str | Path | None = None,
                    kernel: str | None = None, log=print) -> Path:
    """Run the ablation grid into ``out/sweep`` (resumable), then notebook 06 into ``out``."""
    out = Path(out).resolve()
    sources = _sources((SWEEP_NOTEBOOK,), notebooks)
    user = parse_params(params, _all_declared(sources))
    sweep_dir = out / "sweep"
    config_values = {k: v for k, v in user.items() if k in CONFIG_FIELDS}
    run_sweep(dataset, grid, os.path.relpath(sweep_dir), preset, log=log, **config_values)
    # Notebook 06 runs in ``out``: paths relative to it keep this machine's folders out of the report.
    base = {"dataset": dataset, "preset": preset, "sweep_dir": sweep_dir.name,
            "grid": os.path.relpath(Path(grid).resolve(), out),
            **{k: None for k in CONFIG_FIELDS if k not in ("dataset", "out")}}
    jobs = route_parameters(sources, base, user)
    kernel = kernel or ensure_kernel()
    title = f"Self-Classifier study: {dataset} (preset {preset})"
    try:
        execute(jobs[0], out, kernel, log)
    except StudyError:
        write_index(out, title, [f"Stopped at {SWEEP_NOTEBOOK}."], failed=SWEEP_NOTEBOOK)
        raise
    # The study's run if there is one, else the sweep's first variant, tells the device and recipe.
    described = next((d for d in [out / "run", *sorted(sweep_dir.iterdir())] if (d / "config.json").exists()), out / "run")
    notes = [f"Preset: {preset}; device: {device_description(described)}.", caveat(preset, _run_cfg(described))]
    write_index(out, title, notes)
    return out


# ----------------------------------------------------------------------------------------------
# CLI


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``study`` and ``sweep`` subcommands for ``python -m sclib``."""
    st = sub.add_parser("study", help="run notebooks 01-05 with papermill into an HTML report and summary.md",
                        description="Execute the study notebooks for one data set (rerun to resume).")
    _common(st)
    st.set_defaults(handler=_study_command)

    sw = sub.add_parser("sweep", help="run an ablation grid (resumable) and notebook 06",
                        description="Pre-train every variant of an ablation grid, then tabulate it like the seed's Table 2.")
    _common(sw)
    sw.add_argument("--grid", required=True, help="YAML grid: base (shared overrides) and variants (see ablations.yaml)")
    sw.set_defaults(handler=_sweep_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="data set (default: digits)")
    parser.add_argument("--preset", choices=PRESETS, default="fast",
                        help="fast: CPU-sized (default); seed: the seed report's recipe (GPU)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE",
                        help="a notebook parameter or config field, e.g. --param epochs=2 (repeatable)")
    parser.add_argument("--out", help="output folder (default: results/DATASET)")
    parser.add_argument("--notebooks", help="folder holding the notebooks (default: the repository's notebooks/)")
    parser.add_argument("--kernel", help=f"Jupyter kernel name (default: {KERNEL_NAME!r}, installed for this interpreter)")


def _study_command(args: argparse.Namespace) -> int:
    try:
        out = run_study(args.dataset, args.out or f"results/{args.dataset}", args.preset, args.param,
                        args.notebooks, args.kernel, log=_log)
    except StudyError as err:
        print(f"sclib: error: {err}", file=sys.stderr)
        return 1
    _log(f"study: report in {out / 'index.html'}, summary in {out / 'summary.md'}")
    return 0


def _sweep_command(args: argparse.Namespace) -> int:
    try:
        out = run_sweep_study(args.dataset, args.grid, args.out or f"results/{args.dataset}", args.preset,
                              args.param, args.notebooks, args.kernel, log=_log)
    except StudyError as err:
        print(f"sclib: error: {err}", file=sys.stderr)
        return 1
    _log(f"sweep: report in {out / (SWEEP_NOTEBOOK + '.html')}")
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
