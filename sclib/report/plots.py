"""Figures for the Self-Classifier study: pure functions from arrays / DataFrames to Figures.

This module draws what it is handed and loads nothing (no files, no model), so every figure
can be redrawn from saved results and tested on tiny synthetic inputs.

Backend choice: figures are built with ``matplotlib.figure.Figure`` directly, never through
``pyplot``. That needs no display and no global ``matplotlib.use(...)`` (so it is safe on
headless training nodes and never changes a notebook's backend), keeps no hidden global
figure list (no memory growth in long runs), and avoids the double display that
``plt.subplots`` causes in Jupyter (auto-shown at cell end *and* shown as the returned value).
In a notebook, run ``%matplotlib inline`` once (or import ``matplotlib.pyplot`` in an earlier
cell): a returned Figure then displays exactly once as the cell's last expression.

Accuracy-like values are fractions in [0, 1] everywhere (as ``sclib.core.metrics`` returns them) and
are shown in percent; passing percents is rejected loudly rather than drawn 100x too high.
"""

from __future__ import annotations

import functools
import io
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator, PercentFormatter

from sclib.run.files import display_text, write_bytes

__all__ = [
    "ablation_bars",
    "ablation_heatmap",
    "acc_against_seed_report",
    "cluster_grid",
    "cluster_histogram",
    "confusion_matrix_plot",
    "embedding_scatter",
    "probe_curves",
    "save_figure",
    "training_curves",
]

# One house style, applied while a figure's artists are created (rcParams are read then).
_STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "lines.linewidth": 1.6,
    "lines.markersize": 4,
    # every string is drawn as the literal text it is: a class folder "price_$0_$10" is a name,
    # not math text (mathtext would raise on it, or typeset it)
    "text.parse_math": False,
}
_ACCENT = "#d62728"  # reference lines (uniform count, number of classes, seed values)
_MAIN = "#1f77b4"
_MUTED = "#9fbfdf"

F = TypeVar("F", bound=Callable[..., Any])


def _styled(func: F) -> F:
    """Apply the house style locally so callers' global rcParams are never modified."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mpl.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _label(value: Any) -> str:
    """A name as drawn: ``str`` of it, with what is not valid UTF-8 (a Latin-1 folder name read
    as ``caf\\udce9``) shown as its escaped bytes (``caf\\xe9``): the font layer refuses lone
    surrogates."""
    return display_text(str(value))


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


class _TickPercentFormatter(PercentFormatter):
    """Fractions as percents with as many decimals as the current ticks need, and no more.

    ``PercentFormatter(decimals=0)`` prints ticks 0.9975 and 1.0 both as "100%" once an axis
    spans less than a few points (top-3 accuracy near 1); a fixed larger ``decimals`` clutters
    wide axes. Matplotlib hands a formatter all tick locations before labelling them, so the
    smallest number of decimals that writes every tick exactly is chosen there: 95% / 96% on a
    1-point grid, 99.75% / 99.80% on a 0.05-point grid. Exact labels of distinct ticks are
    distinct. Called on a single value (no ``set_locs``), it prints whole percents.
    """

    def __init__(self) -> None:
        super().__init__(xmax=1.0, decimals=0)

    def set_locs(self, locs: Any) -> None:
        super().set_locs(locs)
        self.decimals = _percent_decimals(locs)


def _percent_decimals(locs: Any, most: int = 6) -> int:
    pct = 100.0 * np.asarray(locs, dtype=float)
    pct = pct[np.isfinite(pct)]
    for decimals in range(most + 1):
        if np.allclose(pct, np.round(pct, decimals), rtol=0.0, atol=1e-7):
            return decimals
    return most


def _percent_axis(axis: Any) -> None:
    axis.set_major_formatter(_TickPercentFormatter())


def _line_values(ax: Any) -> np.ndarray:
    """Finite y values of every line in ``ax``, data curves and reference lines alike."""
    values = [np.asarray(line.get_ydata(), dtype=float).ravel() for line in ax.get_lines()]
    finite = np.concatenate(values) if values else np.empty(0)
    return finite[np.isfinite(finite)]


def _fraction_limits(ax: Any, min_span: float) -> None:
    """Y limits of an accuracy panel: at least ``min_span`` tall and kept within [0, 1].

    Autoscaling stretches any range to full height, so a top-3 curve moving between 99.7% and
    100% (one or two test images) would look like a large swing, and a flat line at 100% would
    get an axis running to 105%. The span is widened symmetrically around the data, shifted
    back inside [0, 1], and given matplotlib's usual 5% margins so points at 100% stay whole.
    """
    finite = _line_values(ax)
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, min_span)
    if span <= 0.0:  # one value and no minimum span: leave matplotlib's own expansion
        return
    lo = (lo + hi - span) / 2.0
    lo = min(max(lo, 0.0), 1.0 - span)  # data and min_span are fractions: span <= 1
    margin = float(mpl.rcParams["axes.ymargin"]) * span
    ax.set_ylim(lo - margin, lo + span + margin)


def _integer_axis(axis: Any) -> None:
    """Ticks at whole numbers only, for counts (clusters, samples) and epochs.

    ``MaxNLocator(integer=True)`` alone still falls back to steps below 1 whenever fewer than
    two integers are in view (a constant count of 10 is shown on 9.5..10.5 and gets ticks
    9.6, 9.8, ...); ``min_n_ticks=1`` keeps integer steps as long as one integer is visible.
    Steps and density are those of matplotlib's default locator (20, 40, ... not 15, 30, ...).
    """
    axis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True,
                                       min_n_ticks=1))


def _count_limits(ax: Any) -> None:
    """Widen a count panel whose lines (data and references) span less than 2 to +-1 around
    them, so a constant series shows its value between integer ticks, never on the edge."""
    finite = _line_values(ax)
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 2.0:
        bottom = math.floor(lo) - 1.0
        if lo >= 0.0:  # counts: show 0 at most half a step below, never a "-1" tick
            bottom = max(bottom, -0.5)
        ax.set_ylim(bottom, math.ceil(hi) + 1.0)


def _check_fractions(values: Any, what: str, low: float = 0.0) -> np.ndarray:
    """Catch percent-vs-fraction mix-ups, the most likely way to draw a wrong figure."""
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    if finite.size and (finite.max() > 1.0 + 1e-9 or finite.min() < low - 1e-9):
        raise ValueError(
            f"{what} must be fractions in [{low:g}, 1] (got values from {finite.min():g} to "
            f"{finite.max():g}); if these are percents, divide them by 100 first"
        )
    return arr


def _require_frame(df: Any, name: str, required: Sequence[str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} is missing column(s) {missing}; it has {list(df.columns)}"
        )


def _int_labels(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def _palette(n: int) -> list[tuple[float, float, float, float]]:
    """Qualitative colours; beyond 60 classes they cycle (no palette separates 100 hues)."""
    if n <= 10:
        return [mpl.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [mpl.colormaps["tab20"](i) for i in range(n)]
    base = [mpl.colormaps[m](i) for m in ("tab20", "tab20b", "tab20c") for i in range(20)]
    return [base[i % len(base)] for i in range(n)]


# --------------------------------------------------------------------------------------------
# Training and probing
# --------------------------------------------------------------------------------------------

_HISTORY_PANELS: tuple[tuple[str, str, str], ...] = (
    ("loss", "training loss", "loss"),
    ("lr", "learning rate", "learning rate"),
    ("clusters_used", "clusters used (scored head)", "non-empty clusters"),
    ("images_per_s", "throughput", "images / s"),
)


@_styled
def training_curves(history: pd.DataFrame, num_classes: int | None = None) -> Figure:
    """Loss, learning rate, cluster usage and throughput per epoch, one panel each.

    Cluster usage is the early warning for Self-Classifier's failure mode (collapse onto few
    classes), hence the reference line at ``num_classes``. Panels appear only for columns
    present, so partial logs still plot. A ``seed`` column draws one line per seed, so a seed
    that drifts away from the others shows where it starts to.
    """
    _require_frame(history, "history", ["epoch"])
    panels = [p for p in _HISTORY_PANELS if p[0] in history.columns]
    if not panels:
        raise ValueError(
            "history has none of the columns "
            f"{[p[0] for p in _HISTORY_PANELS]} to plot; it has {list(history.columns)}"
        )
    if len(history) == 0:
        raise ValueError("history is empty; log at least one epoch before plotting")
    runs = _by_seed(history)
    hist = runs[0][1]
    ncols = len(panels) if len(panels) <= 3 else 2
    nrows = -(-len(panels) // ncols)
    fig = _new_figure(3.6 * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    marker = "o" if len(hist) <= 30 else None
    frame = pd.concat([run.assign(seed=name or "") for name, run in runs], ignore_index=True)
    for ax, (col, title, ylabel) in zip(axes, panels):
        if len(runs) > 1:  # each seed thin, so one that drifts away shows where it starts to
            sns.lineplot(data=frame, x="epoch", y=col, units="seed", estimator=None, color=_MUTED, lw=0.8,
                         ax=ax, legend=False)
        _mean_sd_line(ax, frame, col, _MAIN, marker,
                      f"mean of {len(runs)} seeds (band: ± sd)" if len(runs) > 1 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        _integer_axis(ax.xaxis)
        if col == "clusters_used":
            _integer_axis(ax.yaxis)
            if num_classes is not None:
                ax.axhline(num_classes, color=_ACCENT, ls="--", lw=1,
                           label=f"number of classes ({num_classes})")
            _count_limits(ax)
    _legend_below(fig, axes[:len(panels)])
    return fig


def _legend_below(fig: Figure, axes: Any) -> None:
    """One legend for every panel, below them: a legend inside a panel sat on the loss curve's
    end (lower right, where a falling loss ends), and each panel repeated the seeds' entry."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=len(entries))


def _mean_sd_line(ax: Any, frame: pd.DataFrame, y: str, colour: Any, marker: str | None, label: str | None) -> Any:
    """The mean of ``y`` per epoch over the frame's rows (seeds) with a band of one standard
    deviation (ddof 1, none for a single seed), drawn by seaborn; returns the mean's line."""
    before = len(ax.get_lines())
    sns.lineplot(data=frame, x="epoch", y=y, errorbar="sd", color=colour, marker=marker, markeredgewidth=0,
                 label=label, legend=False, ax=ax)
    return ax.get_lines()[before]


def _by_seed(frame: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """One epoch-sorted frame per seed (a single unnamed one without a ``seed`` column)."""
    if "seed" not in frame.columns or frame["seed"].nunique() <= 1:
        return [(None, frame.sort_values("epoch"))]
    return [(f"seed {s}", g.sort_values("epoch")) for s, g in frame.groupby("seed", sort=True)]


def _seed_report_line(ax: Any, seed_report: Mapping[str, Any], key: str) -> None:
    label = str(seed_report.get("label", "seed report"))
    if key not in seed_report:
        return
    values = _check_fractions(seed_report[key], f"seed_report[{key!r}]")
    if values.ndim == 0:
        ax.axhline(float(values), color=_ACCENT, ls="--", lw=1, label=label)
    else:
        if "epoch" not in seed_report or len(seed_report["epoch"]) != len(values):
            raise ValueError(
                f"seed_report[{key!r}] is a curve, so seed_report['epoch'] must give one epoch per value"
            )
        ax.plot(seed_report["epoch"], values, color=_ACCENT, ls="--", lw=1, label=label)


@_styled
def probe_curves(
    df: pd.DataFrame,
    seed_report: Mapping[str, Any] | None = None,
    *,
    min_span: float = 0.05,
) -> Figure:
    """Probe top-1 / top-3 accuracy against pre-training epochs (the seed report's Fig. 2).

    Shows when representation quality saturates, i.e. how many pre-training epochs a budget
    needs. ``df`` has ``epoch``, ``top1`` and/or ``top3`` (fractions) and optionally ``probe``
    (e.g. linear / knn), one line per probe. With a ``seed`` column holding several seeds, the
    line is their mean and a band spans plus and minus one standard deviation. ``seed_report``
    adds the seed report's numbers as a dashed reference: scalars ``{"top1": 0.6, "top3": 0.85}`` draw
    horizontal lines, lists with an ``"epoch"`` list draw a curve; ``"label"`` names it.

    Each panel's y range covers at least ``min_span`` (5 points by default) within [0, 1], so
    differences of a test image or two near 100% are not blown up to full height; pass 0 to
    zoom onto the data. Tick labels get as many decimals as the tick spacing needs.
    """
    if not 0.0 <= min_span <= 1.0:
        raise ValueError(f"min_span must be a fraction in [0, 1], got {min_span!r}")
    _require_frame(df, "df", ["epoch"])
    metrics = [m for m in ("top1", "top3") if m in df.columns]
    if not metrics:
        raise ValueError(f"df needs a 'top1' and/or 'top3' column; it has {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("df is empty; probe at least one checkpoint before plotting")
    for m in metrics:
        _check_fractions(df[m], f"df[{m!r}]")
    groups = list(df.groupby("probe", sort=True)) if "probe" in df.columns else [(None, df)]
    fig = _new_figure(3.8 * len(metrics), 3.0)
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        for (name, group), colour in zip(groups, _palette(len(groups))):
            seeds = int(group.groupby("epoch")[metric].count().max())
            label = (f"{name} probe" if name is not None else "probe") + (
                f" (mean of {seeds} seeds, band: ± sd)" if seeds > 1 else ""
            )
            _mean_sd_line(ax, group, metric, colour, "o" if group["epoch"].nunique() <= 30 else None, label)
        if seed_report is not None:
            _seed_report_line(ax, seed_report, metric)
        ax.set_title(f"top-{metric[-1]} accuracy")
        ax.set_xlabel("pre-training epoch")
        ax.set_ylabel(f"top-{metric[-1]} accuracy")
        _integer_axis(ax.xaxis)
        _percent_axis(ax.yaxis)
        _fraction_limits(ax, min_span)
        if len(groups) > 1 or seed_report is not None:
            ax.legend(loc="lower right")
    return fig


# --------------------------------------------------------------------------------------------
# Clustering diagnostics
# --------------------------------------------------------------------------------------------


@_styled
def confusion_matrix_plot(
    cm: np.ndarray,
    class_names: Sequence[str],
    cluster_names: Sequence[str] | None = None,
    annotate_max: int = 15,
) -> Figure:
    """True class (rows) against matched cluster (columns), coloured by row fraction.

    Row normalisation makes small and large classes comparable: the diagonal reads as
    per-class accuracy after Hungarian matching, off-diagonal cells show which classes merge.
    Counts are written in the cells when the matrix is at most ``annotate_max`` wide.
    Columns are expected already reordered by the matching; they are labelled by
    ``cluster_names``, else by ``class_names`` when square, else by cluster index.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.size == 0:
        raise ValueError(f"cm must be a non-empty 2-D matrix, got shape {cm.shape}")
    if not np.issubdtype(cm.dtype, np.number) or not np.all(np.isfinite(cm)) or cm.min() < 0:
        raise ValueError("cm must hold finite non-negative counts (or fractions)")
    n_rows, n_cols = cm.shape
    class_names = [_label(c) for c in class_names]
    if len(class_names) != n_rows:
        raise ValueError(
            f"class_names has {len(class_names)} names but cm has {n_rows} rows (one per true class)"
        )
    if cluster_names is None:
        cluster_names = class_names if n_cols == n_rows else [str(i) for i in range(n_cols)]
    cluster_names = [_label(c) for c in cluster_names]
    if len(cluster_names) != n_cols:
        raise ValueError(f"cluster_names has {len(cluster_names)} names but cm has {n_cols} columns")

    totals = cm.sum(axis=1, keepdims=True).astype(float)
    frac = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    side = float(np.clip(0.42 * max(n_rows, n_cols) + 2.0, 4.0, 14.0))
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    ax.grid(False)
    is_int = np.issubdtype(cm.dtype, np.integer) or np.all(cm == np.round(cm))
    annotate = max(n_rows, n_cols) <= annotate_max
    named = max(n_rows, n_cols) <= 40
    sns.heatmap(frac, cmap="Blues", vmin=0.0, vmax=1.0, ax=ax, linewidths=0.5, linecolor="white",
                annot=cm.astype(np.int64) if annotate and is_int else (cm if annotate else False),
                fmt="d" if is_int else ".2f", annot_kws={"fontsize": 7},
                xticklabels=cluster_names if named else "auto", yticklabels=class_names if named else "auto",
                cbar_kws={"shrink": 0.8, "label": "fraction of true class"})
    _percent_axis(ax.collections[0].colorbar.ax.yaxis)
    if named:
        ax.set_xticks(np.arange(n_cols) + 0.5, cluster_names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(n_rows) + 0.5, class_names, rotation=0)
    ax.set_xlabel("matched cluster")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (colour: row-normalised)")
    return fig


@_styled
def embedding_scatter(
    xy: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    class_names: Sequence[str] | None = None,
    title: str = "t-SNE of backbone features",
    max_legend: int = 20,
) -> Figure:
    """2-D embedding (t-SNE / UMAP) coloured by class or cluster (the seed report's Fig. 4a).

    Shows whether classes form separated groups in feature space independently of the heads.
    Drawn as one rasterised scatter with small markers, so 10k points stay light even in SVG.
    ``labels`` are integer ids (named by ``class_names``) or the names themselves; with more
    than ``max_legend`` groups the legend lists the first ones and says how many are left out.
    """
    xy = np.asarray(xy, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must have shape [N, 2] (a 2-D embedding), got {xy.shape}")
    labels_arr = np.asarray(labels)
    if labels_arr.ndim != 1 or len(labels_arr) != len(xy):
        raise ValueError(
            f"labels must be 1-D with one entry per point: got {labels_arr.shape} for {len(xy)} points"
        )
    if len(xy) == 0:
        raise ValueError("xy is empty; nothing to plot")
    if np.issubdtype(labels_arr.dtype, np.integer):
        codes = labels_arr.astype(np.int64)
        if codes.min() < 0:
            raise ValueError("integer labels must be non-negative class / cluster ids")
        n_groups = int(codes.max()) + 1
        if class_names is not None:
            if len(class_names) < n_groups:
                raise ValueError(
                    f"class_names has {len(class_names)} names but labels go up to {n_groups - 1}"
                )
            n_groups = len(class_names)
            names = [_label(c) for c in class_names]
        else:
            names = [str(i) for i in range(n_groups)]
    else:
        uniq, codes = np.unique(labels_arr.astype(str), return_inverse=True)
        names, n_groups = [_label(u) for u in uniq], len(uniq)

    colours = np.array(_palette(n_groups))
    size = float(np.clip(20000.0 / len(xy), 1.0, 16.0))
    fig = _new_figure(7.0 if n_groups > 1 else 5.5, 5.0)
    ax = fig.add_subplot()
    ax.grid(False)
    ax.scatter(xy[:, 0], xy[:, 1], c=colours[codes], s=size, linewidths=0, alpha=0.8,
               rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():  # embedding axes carry no units: a plain light frame
        spine.set_visible(True)
        spine.set_color("0.7")
    ax.set_title(f"{title} ({len(xy):,} points)")

    present = [g for g in range(n_groups) if np.any(codes == g)]
    shown = present[:max_legend]
    handles = [Line2D([], [], ls="none", marker="o", markersize=5, color=colours[g],
                      label=names[g]) for g in shown]
    if len(present) > len(shown):
        handles.append(Line2D([], [], ls="none", label=f"... {len(present) - len(shown)} more"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncols=1 if len(handles) <= 25 else 2, handletextpad=0.2)
    return fig


@_styled
def cluster_histogram(
    pred: np.ndarray,
    num_clusters: int,
    expected: float | None = None,
    order: str = "id",
) -> Figure:
    """Samples per predicted cluster against the uniform count (the seed report's Fig. 4b).

    Self-Classifier's column softmax pushes towards equal-size classes; this shows how close a
    model gets and whether clusters are empty. ``expected`` defaults to N / C (800 on the
    STL-10 test set). ``order="size"`` sorts bars by count, descending.
    """
    if not isinstance(num_clusters, (int, np.integer)) or num_clusters < 1:
        raise ValueError(f"num_clusters must be a positive integer, got {num_clusters!r}")
    pred = _int_labels(pred, "pred")
    if pred.size == 0:
        raise ValueError("pred is empty; nothing to count")
    if pred.min() < 0 or pred.max() >= num_clusters:
        raise ValueError(
            f"pred holds cluster ids from {pred.min()} to {pred.max()}, outside "
            f"[0, {num_clusters - 1}]; pass the head's size as num_clusters"
        )
    if order not in ("id", "size"):
        raise ValueError(f"order must be 'id' or 'size', got {order!r}")
    counts = np.bincount(pred, minlength=num_clusters)
    ids = np.arange(num_clusters)
    if order == "size":
        ids = np.argsort(-counts, kind="stable")
    if expected is None:
        expected = len(pred) / num_clusters

    fig = _new_figure(float(np.clip(0.25 * num_clusters + 2.5, 4.5, 12.0)), 3.2)
    ax = fig.add_subplot()
    ax.grid(axis="x", visible=False)
    sns.barplot(x=np.arange(num_clusters), y=counts[ids], color=_MAIN, width=0.8, ax=ax)
    ax.axhline(expected, color=_ACCENT, ls="--", lw=1.2, label=f"uniform ({expected:g})")
    shown = np.arange(num_clusters)[::max(1, -(-num_clusters // 40))]  # at most 40 labels
    ax.set_xticks(shown, [str(i) for i in ids[shown]], rotation=0 if len(shown) <= 20 else 90)
    ax.set_xlabel("predicted cluster" + (" (sorted by size)" if order == "size" else ""))
    ax.set_ylabel("samples")
    _integer_axis(ax.yaxis)
    used = int(np.count_nonzero(counts))
    ax.set_title(f"samples per cluster ({len(pred):,} samples, {used}/{num_clusters} used)")
    ax.legend(loc="upper right")
    return fig


@_styled
def cluster_grid(images: np.ndarray, rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Example images per cluster, one row each (the seed report's Fig. 3).

    Lets a reader judge what a cluster means beyond its score (good and bad clusters side by
    side). ``images`` are uint8 [N, C, H, W] (C = 1 or 3); each row dict has ``cluster`` and
    ``indices`` (into ``images``) and optionally ``label`` (matched class) and ``purity``
    (fraction), giving the title "cluster 3: cat (82 %)", and ``mostly`` (the majority class and
    its share) where that is not the label.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be [N, C, H, W] with C = 1 or 3, got shape {images.shape}; "
            "for channels-last arrays transpose with images.transpose(0, 3, 1, 2)"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 pixels in [0, 255], got dtype {images.dtype}")
    if len(rows) == 0:
        raise ValueError("rows is empty; pass at least one cluster row")
    for k, row in enumerate(rows):
        missing = [key for key in ("cluster", "indices") if key not in row]
        if missing:
            raise ValueError(f"rows[{k}] is missing key(s) {missing}")
        idx = np.asarray(row["indices"], dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"rows[{k}]['indices'] must be a non-empty list of ints")
        if idx.min() < 0 or idx.max() >= len(images):
            raise ValueError(
                f"rows[{k}]['indices'] has index {int(idx.max() if idx.max() >= len(images) else idx.min())}"
                f" outside [0, {len(images) - 1}] (images holds {len(images)} samples)"
            )
        if "purity" in row:
            _check_fractions(row["purity"], f"rows[{k}]['purity']")

    ncols = max(len(row["indices"]) for row in rows)
    fig = _new_figure(0.95 * ncols + 0.3, 1.25 * len(rows) + 0.2)
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1))
    gray = images.shape[1] == 1
    for subfig, row in zip(subfigs, rows):
        subfig.suptitle(_row_title(row), fontsize=9, x=0.01, ha="left")
        axes = np.atleast_1d(subfig.subplots(1, ncols))
        for j, ax in enumerate(axes):
            ax.axis("off")
            if j < len(row["indices"]):
                img = images[int(row["indices"][j])]
                if gray:
                    ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                else:
                    ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
    return fig


def _row_title(row: Mapping[str, Any]) -> str:
    """"cluster 3: cat (82 %)": the class and the share of the cluster that is it. Where the
    matching gave the cluster a class it barely holds, what it mostly holds comes first:
    "cluster 0: mostly automobile (34 %); matched to airplane (20 %)" (it read
    "cluster 0 -> 'airplane, mostly automobile (34%)' (purity 20%)")."""
    title = f"cluster {row['cluster']}"
    purity = f"{100.0 * float(row['purity']):.0f} %" if row.get("purity") is not None else None
    label = _label(row["label"]) if row.get("label") is not None else None
    if label is None:
        return title + (f" (purity {purity})" if purity else "")
    if row.get("mostly") is not None:
        name, fraction = row["mostly"]
        title += f": mostly {_label(name)} ({100.0 * float(fraction):.0f} %); matched to {label}"
    else:
        title += f": {label}"
    return title + (f" ({purity})" if purity else "")


# --------------------------------------------------------------------------------------------
# Ablations and summaries
# --------------------------------------------------------------------------------------------


@_styled
def ablation_bars(
    table: pd.DataFrame,
    metric: str = "acc",
    baseline: str | None = None,
    variant_column: str = "variant",
) -> Figure:
    """One horizontal bar per ablation variant for one metric (fractions, shown in percent).

    Horizontal bars keep long variant names readable; the baseline bar is highlighted and a
    dashed line at its value makes "better / worse than base" visible at a glance. Variants come
    from ``variant_column`` or, if absent, the index. A ``{metric}_std`` column adds error bars.
    """
    _require_frame(table, "table", [metric])
    if len(table) == 0:
        raise ValueError("table is empty; nothing to plot")
    names = [_label(v) for v in (table[variant_column] if variant_column in table.columns
                                 else table.index)]
    values = _check_fractions(table[metric].to_numpy(), f"table[{metric!r}]",
                              low=-1.0 if metric == "ari" else 0.0)
    baseline = None if baseline is None else _label(baseline)
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the variants {names}")
    std_col = f"{metric}_std"
    xerr = 100.0 * table[std_col].to_numpy(dtype=float) if std_col in table.columns else None

    fig = _new_figure(6.5, 0.32 * len(names) + 1.3)
    ax = fig.add_subplot()
    ax.grid(axis="y", visible=False)
    colours = [_ACCENT if n == baseline else (_MUTED if baseline else _MAIN) for n in names]
    y = np.arange(len(names))
    bars = ax.barh(y, 100.0 * values, color=colours, xerr=xerr, height=0.7)
    ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    if baseline is not None:
        ax.axvline(100.0 * values[names.index(baseline)], color=_ACCENT, ls="--", lw=1)
    ax.set_xlabel(f"{metric.upper()} (%)")
    ax.set_xlim(min(0.0, 100.0 * float(np.nanmin(values)) * 1.1),
                max(1.0, 100.0 * float(np.nanmax(values)) * 1.12))
    ax.set_title(f"ablations: {metric.upper()}" + (f" (highlighted: {baseline})" if baseline else ""))
    return fig


@_styled
def ablation_heatmap(
    table: pd.DataFrame,
    baseline: str | None = None,
    metrics: Sequence[str] = ("nmi", "ami", "ari", "acc"),
    variant_column: str = "variant",
) -> Figure:
    """The ablation grid as a heatmap: one row per variant, one column per metric.

    Cells are annotated with the mean (and ``± std`` where a ``{metric}_std`` column has it, in
    points); with a ``baseline`` the colour is the difference from it in points (red better,
    blue worse, white equal), so the variants that help stand out across all metrics at once;
    without one the colour is the value itself.
    """
    _require_frame(table, "table", list(metrics))
    if len(table) == 0:
        raise ValueError("table is empty; nothing to plot")
    names = [_label(v) for v in (table[variant_column] if variant_column in table.columns else table.index)]
    baseline = None if baseline is None else _label(baseline)
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the variants {names}")
    values = np.column_stack([100.0 * _check_fractions(table[m].to_numpy(), f"table[{m!r}]",
                                                       low=-1.0 if m == "ari" else 0.0) for m in metrics])
    stds = np.column_stack([100.0 * table[f"{m}_std"].to_numpy(dtype=float) if f"{m}_std" in table.columns
                            else np.full(len(table), np.nan) for m in metrics])
    notes = np.array([[f"{v:.1f}" + (f" ± {e:.1f}" if np.isfinite(e) else "") for v, e in zip(vr, er)]
                      for vr, er in zip(values, stds)])
    fig = _new_figure(2.0 + 1.25 * len(metrics), 0.34 * len(names) + 1.4)
    ax = fig.add_subplot()
    ax.grid(False)
    if baseline is not None:
        shown = values - values[names.index(baseline)]
        reach = max(float(np.nanmax(np.abs(shown))), 0.5)
        style = {"cmap": "RdBu_r", "center": 0.0, "vmin": -reach, "vmax": reach}
        label, title = f"points against {baseline}", f"ablations (colour: difference from {baseline})"
    else:
        shown, style, label, title = values, {"cmap": "Blues"}, "percent", "ablations"
    with warnings.catch_warnings():  # seaborn 0.13 recentres the colormap with a call newer matplotlib deprecates
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(shown, annot=notes, fmt="", annot_kws={"fontsize": 7}, linewidths=0.5, linecolor="white",
                    xticklabels=[f"{m.upper()} (%)" for m in metrics], yticklabels=names, ax=ax,
                    cbar_kws={"label": label, "shrink": 0.8}, **style)
    ax.set_yticks(np.arange(len(names)) + 0.5, names, rotation=0)
    ax.tick_params(axis="x", top=False, bottom=False)
    ax.set_title(title)
    return fig


@_styled
def acc_against_seed_report(
    ours: pd.DataFrame,
    seed_report: Mapping[str, float],
    order: Sequence[str] | None = None,
    metric: str = "acc",
) -> Figure:
    """Every data set's score against the seed report's, at one glance (the front page's figure).

    ``ours`` is long form, one row per seed: ``dataset`` and ``metric`` (fractions). Each seed is
    a dot; their mean and one standard deviation (ddof 1) a bar, as seaborn's ``pointplot``
    draws them. ``seed_report`` maps data set names to the seed report's value (fractions), drawn
    as red diamonds; a data set with a seed report value and no runs is marked "not run".
    ``order`` lists the data sets top to bottom (default: ours, then the seed report's).
    """
    _require_frame(ours, "ours", ["dataset", metric])
    _check_fractions(ours[metric], f"ours[{metric!r}]", low=-1.0 if metric == "ari" else 0.0)
    _check_fractions(list(seed_report.values()), "seed_report values")
    order = [str(n) for n in (order if order is not None else dict.fromkeys([*ours["dataset"], *seed_report]))]
    unknown = sorted(set(ours["dataset"]) - set(order))
    if unknown:
        raise ValueError(f"data sets {unknown} are in ours but not in order {order}")
    if not order:
        raise ValueError("nothing to draw: ours and seed_report are both empty")

    fig = _new_figure(6.4, 0.42 * len(order) + 1.3)
    ax = fig.add_subplot()
    ax.grid(axis="y", visible=False)
    if len(ours):
        state = np.random.get_state()  # seaborn jitters with numpy's global generator: fix it, so a
        np.random.seed(0)  # redrawn figure is the same file and git stays clean
        try:
            sns.stripplot(data=ours, x=metric, y="dataset", order=order, color=_MUTED, size=4, jitter=0.15, ax=ax,
                          zorder=1)
        finally:
            np.random.set_state(state)
        sns.pointplot(data=ours, x=metric, y="dataset", order=order, errorbar="sd", color=_MAIN, linestyle="none",
                      marker="o", markersize=5, capsize=0.3, err_kws={"linewidth": 1.4}, ax=ax, zorder=3)
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(len(order) - 0.5, -0.5)
    where = {name: i for i, name in enumerate(order)}
    named = [n for n in order if n in seed_report]
    ax.scatter([seed_report[n] for n in named], [where[n] for n in named], marker="D", s=30, color=_ACCENT, zorder=4)
    ran = set(ours["dataset"])
    for n in named:
        if n not in ran:
            ax.annotate("not run here", (seed_report[n], where[n]), xytext=(8, 0), textcoords="offset points",
                        va="center", fontsize=8, color="0.35")
    ax.set_xlim(0.0, 1.0)
    _percent_axis(ax.xaxis)
    ax.set_xlabel(f"{metric.upper()} on the test split (%)")
    ax.set_ylabel("")
    ax.legend(handles=[
        Line2D([], [], ls="none", marker="o", color=_MAIN, label="this study: mean ± sd over seeds"),
        Line2D([], [], ls="none", marker="o", color=_MUTED, label="one seed"),
        Line2D([], [], ls="none", marker="D", color=_ACCENT, label="seed report, Table 1"),
    ], loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, borderaxespad=0.2)
    return fig


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_figure(
    fig: Figure,
    directory: str | os.PathLike[str],
    stem: str,
    dpi: int = 120,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Write ``stem.<format>`` for each format atomically (``sclib.run.files``), then close the figure.

    A reader polling the results folder never sees a half-written image. PNG is the default;
    ask for ``("png", "svg")`` or ``"pdf"`` for print. SVGs are made reproducible (no date, fixed
    hash salt) so re-running leaves unchanged figures unchanged in git. Closing frees memory in
    long sweeps that draw many figures.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not stem or Path(stem).name != stem or stem in (".", ".."):
        raise ValueError(f"stem must be a plain file name without directories, got {stem!r}")
    written: list[Path] = []
    for text in fig.findobj(Text):  # literal text also in figures drawn outside the house style
        text.set_parse_math(False)
        text.set_text(_label(text.get_text()))
    try:
        for fmt in formats:
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else None
            # ticks made while drawing read rcParams then: they too are literal text
            with mpl.rc_context({"svg.hashsalt": "sclib", "text.parse_math": False}):
                fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
            written.append(write_bytes(Path(directory) / f"{stem}.{fmt}", buffer.getvalue()))
    finally:
        _close(fig)
    return written


def _close(fig: Figure) -> None:
    # Figures made here are not tracked by pyplot; one made with plt.subplots is, so release
    # it there too, without importing pyplot (which would pick a backend) when nobody has.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
