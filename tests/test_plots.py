"""Behaviour of sclib.report.plots on tiny synthetic inputs: what is drawn, what is written, what is refused."""

from __future__ import annotations

import os

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, PolyCollection, QuadMesh
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sclib.report import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _hlines_at(ax, y: float) -> list:
    """Horizontal reference lines: a Line2D whose y data is constant and equal to y."""
    found = []
    for line in ax.get_lines():
        ydata = np.asarray(line.get_ydata(), dtype=float)
        if ydata.size and np.allclose(ydata, y):
            found.append(line)
    return found


def _shown_ticks(axis) -> list[tuple[float, str]]:
    """(location, label) of the major ticks inside the view, as an Agg draw lays them out."""
    fig = axis.axes.figure
    FigureCanvasAgg(fig).draw()  # tick locations and labels are computed at draw time
    lo, hi = sorted(axis.get_view_interval())
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    along = 1 if axis.axis_name == "y" else 0
    return [(float(t.get_position()[along]), t.get_text()) for t in axis.get_majorticklabels()
            if lo - tol <= t.get_position()[along] <= hi + tol]


def _assert_integer_ticks(axis, at_least: int = 2) -> None:
    shown = _shown_ticks(axis)
    assert len(shown) >= at_least, shown
    for loc, text in shown:
        assert loc == round(loc), shown
        assert text.replace("\N{MINUS SIGN}", "-").lstrip("-").isdigit(), shown


def _assert_percent_ticks_distinct_and_exact(axis) -> None:
    shown = _shown_ticks(axis)
    labels = [text for _, text in shown]
    assert len(shown) >= 2 and len(set(labels)) == len(labels), labels
    for loc, text in shown:  # each label reads back as its own tick, not a rounded neighbour
        assert text.endswith("%"), labels
        assert float(text[:-1]) == pytest.approx(100.0 * loc, abs=1e-9), labels


# ----------------------------------------------------------------------------------- training


def test_training_curves_one_panel_per_present_column_and_class_line():
    history = pd.DataFrame({
        "epoch": [3, 1, 2],  # unsorted on purpose: curves must be drawn in epoch order
        "loss": [1.0, 3.0, 2.0],
        "lr": [0.3, 0.1, 0.2],
        "clusters_used": [9, 4, 7],
    })
    fig = plots.training_curves(history, num_classes=10)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    loss_ax, lr_ax, used_ax = fig.axes
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_ydata(), [3.0, 2.0, 1.0])
    np.testing.assert_array_equal(lr_ax.get_lines()[0].get_ydata(), [0.1, 0.2, 0.3])
    assert len(_hlines_at(used_ax, 10)) == 1
    assert not _hlines_at(loss_ax, 10)
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)


def _band(ax) -> dict[float, tuple[float, float]]:
    """The ± sd band seaborn draws: per x, the lowest and highest y of the filled polygon."""
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    xy = np.concatenate([p.vertices for p in band.get_paths()])
    return {float(x): (xy[xy[:, 0] == x, 1].min(), xy[xy[:, 0] == x, 1].max()) for x in np.unique(xy[:, 0])}


def test_training_curves_over_seeds_mean_line_sd_band_and_each_seed_thin():
    rng = np.random.default_rng(4)
    history = pd.DataFrame({"epoch": np.tile([1, 2, 3, 4], 3), "seed": np.repeat([0, 1, 2], 4),
                            "loss": rng.uniform(1.0, 3.0, 12)})
    ax = plots.training_curves(history).axes[0]
    stats = history.groupby("epoch")["loss"].agg(["mean", lambda v: np.std(v, ddof=1)])
    mean = next(ln for ln in ax.get_lines() if ln.get_label().startswith("mean of 3 seeds"))
    np.testing.assert_allclose(mean.get_ydata(), stats["mean"])
    for epoch, (lo, hi) in _band(ax).items():
        np.testing.assert_allclose([lo, hi], [stats.loc[epoch, "mean"] - stats.iloc[:, 1][epoch],
                                              stats.loc[epoch, "mean"] + stats.iloc[:, 1][epoch]])
    thin = [ln for ln in ax.get_lines() if ln is not mean]
    assert sorted(tuple(ln.get_ydata()) for ln in thin) == sorted(
        tuple(g.sort_values("epoch")["loss"]) for _, g in history.groupby("seed"))
    assert ax.figure.legends


@pytest.mark.parametrize("seeds", [1, 3])
@pytest.mark.parametrize("loss", ["falling", "rising"])
def test_the_training_curves_legend_covers_no_panel(seeds, loss):
    """Fig. 1's legend sat in the lower right of the panels, over the end of a falling loss."""
    epochs = np.arange(1, 31)
    curve = np.linspace(4.0, 1.0, 30) if loss == "falling" else np.linspace(1.0, 4.0, 30)
    history = pd.DataFrame({"epoch": np.tile(epochs, seeds), "seed": np.repeat(np.arange(seeds), 30),
                            "loss": np.tile(curve, seeds), "lr": np.tile(np.linspace(0.1, 0.001, 30), seeds),
                            "clusters_used": np.tile(np.linspace(3, 10, 30).round(), seeds)})
    fig = plots.training_curves(history, num_classes=10)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out
    renderer = canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
    assert not any(ax.get_legend() for ax in fig.axes)


def test_training_curves_skips_missing_columns_and_four_panels_fit_a_grid():
    assert len(plots.training_curves(pd.DataFrame({"epoch": [1], "loss": [1.0]})).axes) == 1
    full = pd.DataFrame({"epoch": [1, 2], "loss": [2.0, 1.0], "lr": [0.1, 0.2],
                         "clusters_used": [3, 5], "images_per_s": [100.0, 120.0]})
    fig = plots.training_curves(full)
    assert len(fig.axes) == 4
    assert not _hlines_at(fig.axes[2], 10)  # no class line unless num_classes given


@pytest.mark.parametrize("used", [[10, 10, 10, 10], [7, 9, 10, 10], [1, 1], [10]])
def test_training_curves_clusters_used_has_integer_ticks_and_visible_class_line(used):
    history = pd.DataFrame({"epoch": np.arange(1, len(used) + 1), "clusters_used": used})
    fig = plots.training_curves(history, num_classes=10)
    ax = fig.axes[0]
    _assert_integer_ticks(ax.yaxis)  # a count: never 9.5 / 10.0 / 10.5, also when constant
    lo, hi = ax.get_ylim()
    assert lo < 10 < hi  # the num_classes reference stays inside the panel, not on its edge
    assert lo < min(used) and max(used) < hi
    # epochs are counted too: whole numbers even for one or two of them (one epoch: one tick)
    _assert_integer_ticks(ax.xaxis, at_least=min(2, len(used)))


def test_training_curves_clusters_used_integer_ticks_without_reference_line():
    fig = plots.training_curves(pd.DataFrame({"epoch": [1, 2, 3], "clusters_used": [4, 4, 4]}))
    _assert_integer_ticks(fig.axes[0].yaxis)
    lo, hi = fig.axes[0].get_ylim()
    assert lo < 4 < hi


def test_training_curves_rejects_bad_history():
    with pytest.raises(ValueError, match="epoch"):
        plots.training_curves(pd.DataFrame({"loss": [1.0]}))
    with pytest.raises(ValueError, match="none of the columns"):
        plots.training_curves(pd.DataFrame({"epoch": [1], "foo": [1.0]}))
    with pytest.raises(ValueError, match="DataFrame"):
        plots.training_curves({"epoch": [1], "loss": [1.0]})


# ---------------------------------------------------------------------------------- probing


def test_probe_curves_two_percent_panels_one_line_per_probe_and_seed_reference():
    df = pd.DataFrame({
        "epoch": [0, 100, 200, 0, 100, 200],
        "top1": [0.1, 0.4, 0.5, 0.1, 0.3, 0.45],
        "top3": [0.3, 0.7, 0.8, 0.3, 0.6, 0.75],
        "probe": ["linear"] * 3 + ["knn"] * 3,
    })
    fig = plots.probe_curves(df, seed_report={"top1": 0.55, "top3": 0.85})
    assert len(fig.axes) == 2
    top1_ax, top3_ax = fig.axes
    assert "top-1" in top1_ax.get_title() and "top-3" in top3_ax.get_title()
    # two probe curves + one seed line per panel
    assert len(top1_ax.get_lines()) == 3
    linear = next(ln for ln in top1_ax.get_lines() if ln.get_label() == "linear probe")
    np.testing.assert_allclose(linear.get_ydata(), [0.1, 0.4, 0.5])
    assert len(_hlines_at(top1_ax, 0.55)) == 1
    assert len(_hlines_at(top3_ax, 0.85)) == 1
    # percent axis: a fraction of 0.5 is labelled 50%
    assert top1_ax.yaxis.get_major_formatter()(0.5, 0) == "50%"


def test_probe_curves_over_seeds_mean_and_sd_band():
    df = pd.DataFrame({"epoch": [10, 20, 10, 20, 10, 20], "top1": [0.5, 0.6, 0.52, 0.66, 0.49, 0.61],
                       "seed": [0, 0, 1, 1, 2, 2]})
    ax = plots.probe_curves(df).axes[0]
    (line,) = ax.get_lines()
    assert line.get_label() == "probe (mean of 3 seeds, band: ± sd)"
    np.testing.assert_allclose(line.get_ydata(), [np.mean([0.5, 0.52, 0.49]), np.mean([0.6, 0.66, 0.61])])
    lo, hi = _band(ax)[20.0]
    sd = np.std([0.6, 0.66, 0.61], ddof=1)
    np.testing.assert_allclose([lo, hi], [line.get_ydata()[1] - sd, line.get_ydata()[1] + sd])


def test_probe_curves_seed_curve_and_single_metric():
    df = pd.DataFrame({"epoch": [1, 2], "top1": [0.2, 0.3]})
    fig = plots.probe_curves(df, seed_report={"epoch": [1, 2], "top1": [0.25, 0.35], "label": "seed"})
    assert len(fig.axes) == 1
    seed_line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "seed")
    np.testing.assert_allclose(seed_line.get_ydata(), [0.25, 0.35])


def test_probe_curves_rejects_percents_and_missing_metrics():
    with pytest.raises(ValueError, match="divide them by 100"):
        plots.probe_curves(pd.DataFrame({"epoch": [1], "top1": [55.0], "top3": [80.0]}))
    with pytest.raises(ValueError, match="top1"):
        plots.probe_curves(pd.DataFrame({"epoch": [1], "acc": [0.5]}))
    with pytest.raises(ValueError, match="seed_report\\['epoch'\\]"):
        plots.probe_curves(pd.DataFrame({"epoch": [1], "top1": [0.5]}),
                           seed_report={"top1": [0.4, 0.5]})


def _near_perfect_top3() -> pd.DataFrame:
    return pd.DataFrame({"epoch": [10, 25, 50, 100],
                         "top1": [0.950, 0.967, 0.974, 0.976],
                         "top3": [0.9971, 0.9984, 0.9990, 1.0]})


def test_probe_curves_near_100_percent_has_distinct_tick_labels_and_a_sane_range():
    fig = plots.probe_curves(_near_perfect_top3())
    top1_ax, top3_ax = fig.axes
    for ax in (top1_ax, top3_ax):
        _assert_percent_ticks_distinct_and_exact(ax.yaxis)
        _assert_integer_ticks(ax.xaxis)
    lo, hi = top3_ax.get_ylim()
    # at least the default minimum span, never far beyond 100%, and every point inside
    assert hi - lo >= 0.05 - 1e-12
    assert 1.0 < hi <= 1.01
    assert lo < 0.9971


def test_probe_curves_labels_stay_distinct_in_any_narrow_view():
    fig = plots.probe_curves(_near_perfect_top3())
    top3_ax = fig.axes[1]
    for view in [(0.996, 1.0), (0.99975, 1.0), (0.5, 0.52), (0.0, 1.0)]:  # a reader zooming
        top3_ax.set_ylim(*view)
        _assert_percent_ticks_distinct_and_exact(top3_ax.yaxis)


def test_probe_curves_min_span():
    # min_span=0 zooms onto the 0.3-point range of the data: labels must gain decimals.
    fig = plots.probe_curves(_near_perfect_top3(), min_span=0.0)
    lo, hi = fig.axes[1].get_ylim()
    assert hi - lo < 0.01 and lo < 0.9971 and hi > 1.0
    _assert_percent_ticks_distinct_and_exact(fig.axes[1].yaxis)
    # a flat line at 100% gets the minimum span below it, not an axis running to 105%
    flat = plots.probe_curves(pd.DataFrame({"epoch": [1, 2], "top1": [1.0, 1.0]}))
    lo, hi = flat.axes[0].get_ylim()
    assert hi - lo >= 0.05 - 1e-12 and 1.0 < hi <= 1.01
    # a wide range is left as autoscaling draws it
    wide = plots.probe_curves(pd.DataFrame({"epoch": [1, 2], "top1": [0.2, 0.6]}))
    np.testing.assert_allclose(wide.axes[0].get_ylim(), (0.18, 0.62))
    with pytest.raises(ValueError, match="min_span"):
        plots.probe_curves(_near_perfect_top3(), min_span=2.0)


# ------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_row_normalised_colours_and_count_annotations():
    cm = np.array([[8, 2, 0], [1, 1, 0], [0, 0, 0]])  # last class absent: must not divide by 0
    fig = plots.confusion_matrix_plot(cm, ["a", "b", "c"])
    ax = fig.axes[0]
    meshes = [m for m in ax.collections if isinstance(m, QuadMesh)]  # seaborn's heatmap
    assert len(meshes) == 1
    shown = np.asarray(meshes[0].get_array()).reshape(3, 3)
    expected = np.array([[0.8, 0.2, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(shown, expected)
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(str(v) for v in cm.ravel())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "matched cluster"


def test_confusion_matrix_colorbar_percent_labels_are_whole_percents():
    fig = plots.confusion_matrix_plot(np.array([[3, 1], [0, 4]]), ["a", "b"])
    cbar_ax = fig.axes[1]
    _assert_percent_ticks_distinct_and_exact(cbar_ax.yaxis)
    assert [text for _, text in _shown_ticks(cbar_ax.yaxis)] == [
        "0%", "20%", "40%", "60%", "80%", "100%"]


def test_confusion_matrix_large_is_not_annotated_and_names_must_match():
    cm = np.eye(20, dtype=int) * 5
    fig = plots.confusion_matrix_plot(cm, [f"c{i}" for i in range(20)])
    assert len(fig.axes[0].texts) == 0
    with pytest.raises(ValueError, match="class_names has 2 names but cm has 3 rows"):
        plots.confusion_matrix_plot(np.ones((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="2-D"):
        plots.confusion_matrix_plot(np.ones(3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-negative"):
        plots.confusion_matrix_plot(-np.ones((2, 2)), ["a", "b"])


# ---------------------------------------------------------------------------------- scatter


def test_embedding_scatter_draws_every_point_coloured_by_its_class():
    rng = np.random.default_rng(0)
    n = 500
    labels = rng.integers(0, 4, n)
    xy = rng.normal(size=(n, 2))
    fig = plots.embedding_scatter(xy, labels, class_names=["w", "x", "y", "z"], title="t-SNE")
    ax = fig.axes[0]
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collections) == 1
    np.testing.assert_allclose(collections[0].get_offsets(), xy)
    face = collections[0].get_facecolors()[:, :3]
    # same class -> same colour, different class -> different colour
    for a in range(4):
        cols = face[labels == a]
        assert np.allclose(cols, cols[0])
    firsts = [tuple(np.round(face[labels == a][0], 6)) for a in range(4)]
    assert len(set(firsts)) == 4
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["w", "x", "y", "z"]
    # legend colour matches the points of that class
    for handle, a in zip(legend.legend_handles, range(4)):
        np.testing.assert_allclose(mcolors.to_rgb(handle.get_color()), firsts[a], atol=1e-6)


def test_embedding_scatter_limits_the_legend_for_many_classes_and_accepts_string_labels():
    rng = np.random.default_rng(1)
    labels = np.arange(1000) % 100
    fig = plots.embedding_scatter(rng.normal(size=(1000, 2)), labels, max_legend=20)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(texts) == 21 and texts[-1] == "... 80 more"
    fig = plots.embedding_scatter(np.zeros((3, 2)), np.array(["cat", "dog", "cat"]))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["cat", "dog"]


def test_embedding_scatter_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one entry per point"):
        plots.embedding_scatter(np.zeros((5, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plots.embedding_scatter(np.zeros((5, 3)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="class_names has 2 names"):
        plots.embedding_scatter(np.zeros((3, 2)), np.array([0, 1, 2]), class_names=["a", "b"])


# -------------------------------------------------------------------------------- histogram


def test_cluster_histogram_bars_equal_bincount_with_uniform_line():
    pred = np.array([0, 0, 0, 2, 2, 4, 0, 2])  # clusters 1, 3, 5 empty
    fig = plots.cluster_histogram(pred, num_clusters=6)
    ax = fig.axes[0]
    bars = _bars(ax)
    assert len(bars) == 6
    np.testing.assert_array_equal([b.get_height() for b in bars], [4, 0, 3, 0, 1, 0])
    assert len(_hlines_at(ax, len(pred) / 6)) == 1
    assert "3/6 used" in ax.get_title()


def test_cluster_histogram_sorted_order_and_explicit_expected():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 7, 300)
    fig = plots.cluster_histogram(pred, 7, expected=50.0, order="size")
    ax = fig.axes[0]
    heights = [b.get_height() for b in _bars(ax)]
    np.testing.assert_array_equal(heights, np.sort(np.bincount(pred, minlength=7))[::-1])
    order = np.argsort(-np.bincount(pred, minlength=7), kind="stable")
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in order]
    assert len(_hlines_at(ax, 50.0)) == 1


@pytest.mark.parametrize("pred", [np.array([0, 1, 1]), np.array([0]), np.arange(7) % 3])
def test_cluster_histogram_counts_axis_has_integer_ticks(pred):
    fig = plots.cluster_histogram(pred, num_clusters=int(pred.max()) + 2)
    ax = fig.axes[0]
    _assert_integer_ticks(ax.yaxis)
    assert ax.get_ylim()[1] > np.bincount(pred).max()


def test_cluster_histogram_rejects_ids_outside_the_head():
    with pytest.raises(ValueError, match="outside"):
        plots.cluster_histogram(np.array([0, 5]), num_clusters=5)
    with pytest.raises(ValueError, match="num_clusters"):
        plots.cluster_histogram(np.array([0]), num_clusters=0)
    with pytest.raises(ValueError, match="order"):
        plots.cluster_histogram(np.array([0]), num_clusters=1, order="random")


# ------------------------------------------------------------------------------------- grid


def _grid_inputs(channels: int):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, channels, 8, 8)).astype(np.uint8)
    rows = [
        {"cluster": 3, "label": "cat", "purity": 0.82, "indices": [0, 1, 2, 3]},
        {"cluster": 7, "label": "dog", "purity": 0.305, "indices": [5, 6]},
    ]
    return images, rows


def test_cluster_grid_rows_by_max_images_with_titles_and_pixels():
    images, rows = _grid_inputs(3)
    fig = plots.cluster_grid(images, rows)
    assert len(fig.axes) == 2 * 4
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 4 + 2
    # first image of row 2 is images[5] in H, W, C order
    row2_first = fig.subfigs[1].axes[0].get_images()[0]
    np.testing.assert_array_equal(row2_first.get_array(), images[5].transpose(1, 2, 0))
    titles = [sf.get_suptitle() for sf in fig.subfigs]
    assert titles == ["cluster 3: cat (82 %)", "cluster 7: dog (30 %)"]


@pytest.mark.parametrize("row, title", [
    ({"cluster": 3, "label": "cat", "purity": 0.82}, "cluster 3: cat (82 %)"),
    ({"cluster": 0, "label": "airplane", "purity": 0.2, "mostly": ("automobile", 0.34)},
     "cluster 0: mostly automobile (34 %); matched to airplane (20 %)"),
    ({"cluster": 5, "purity": 0.5}, "cluster 5 (purity 50 %)"),
    ({"cluster": 5}, "cluster 5"),
], ids=["matched is the majority", "matched is not the majority", "no label", "nothing else"])
def test_a_cluster_title_says_what_the_cluster_mostly_holds_in_plain_words(row, title):
    """It read "cluster 0 -> 'airplane, mostly automobile (34%)' (purity 20%)"."""
    images, _ = _grid_inputs(3)
    fig = plots.cluster_grid(images, [{**row, "indices": [0, 1]}])
    assert fig.subfigs[0].get_suptitle() == title


def test_cluster_grid_grayscale_uses_full_uint8_range():
    images, rows = _grid_inputs(1)
    fig = plots.cluster_grid(images, rows[:1])
    im = fig.axes[0].get_images()[0]
    np.testing.assert_array_equal(im.get_array(), images[0, 0])
    assert im.get_clim() == (0, 255)


def test_cluster_grid_rejects_bad_images_and_rows():
    images, rows = _grid_inputs(3)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        plots.cluster_grid(images.transpose(0, 2, 3, 1), rows)  # channels-last
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        plots.cluster_grid(images[:, 0], rows)
    with pytest.raises(ValueError, match="uint8"):
        plots.cluster_grid(images.astype(np.float32), rows)
    with pytest.raises(ValueError, match="outside"):
        plots.cluster_grid(images, [{"cluster": 0, "indices": [12]}])
    with pytest.raises(ValueError, match="missing"):
        plots.cluster_grid(images, [{"cluster": 0}])
    with pytest.raises(ValueError, match="empty"):
        plots.cluster_grid(images, [])


# -------------------------------------------------------------------------------- ablations


def test_ablation_bars_heights_in_percent_and_baseline_highlighted():
    table = pd.DataFrame({"variant": ["batch 128", "base", "heads 1 x 10"],
                          "acc": [0.4886, 0.5034, 0.4877],
                          "nmi": [0.39, 0.40, 0.398]})
    fig = plots.ablation_bars(table, metric="acc", baseline="base")
    ax = fig.axes[0]
    bars = _bars(ax)
    assert len(bars) == 3
    np.testing.assert_allclose([b.get_width() for b in bars], [48.86, 50.34, 48.77])
    colours = [mcolors.to_hex(b.get_facecolor()) for b in bars]
    assert colours[1] != colours[0] and colours[0] == colours[2]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["batch 128", "base", "heads 1 x 10"]
    vlines = [ln for ln in ax.get_lines() if np.allclose(ln.get_xdata(), 50.34)]
    assert len(vlines) == 1
    assert [t.get_text() for t in ax.texts] == ["48.86", "50.34", "48.77"]


def test_ablation_bars_uses_index_and_rejects_bad_input():
    table = pd.DataFrame({"acc": [0.5, 0.6]}, index=["a", "b"])
    fig = plots.ablation_bars(table)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="baseline 'c'"):
        plots.ablation_bars(table, baseline="c")
    with pytest.raises(ValueError, match="missing column"):
        plots.ablation_bars(table, metric="nmi")
    with pytest.raises(ValueError, match="divide them by 100"):
        plots.ablation_bars(pd.DataFrame({"acc": [50.3]}, index=["base"]))


def test_ablation_heatmap_colours_the_difference_from_base_and_writes_mean_and_std():
    table = pd.DataFrame({"variant": ["base", "batch 128", "heads 1 x 10"], "acc": [0.60, 0.63, 0.55],
                          "acc_std": [0.01, 0.02, float("nan")], "nmi": [0.5, 0.49, 0.52]})
    fig = plots.ablation_heatmap(table, baseline="base", metrics=("nmi", "acc"))
    ax = fig.axes[0]
    (mesh,) = [m for m in ax.collections if isinstance(m, QuadMesh)]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(3, 2), [[0, 0], [-1, 3], [2, -5]], atol=1e-9)
    assert [t.get_text() for t in ax.texts] == ["50.0", "60.0 ± 1.0", "49.0", "63.0 ± 2.0", "52.0", "55.0"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["base", "batch 128", "heads 1 x 10"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["NMI (%)", "ACC (%)"]
    lo, hi = mesh.get_clim()
    assert lo == pytest.approx(-5) and hi == pytest.approx(5)  # centred: no change is white
    plain = plots.ablation_heatmap(table, metrics=("acc",)).axes[0]
    np.testing.assert_allclose(np.asarray(plain.collections[0].get_array()).ravel(), [60, 63, 55])
    with pytest.raises(ValueError, match="baseline 'x'"):
        plots.ablation_heatmap(table, baseline="x", metrics=("acc",))
    with pytest.raises(ValueError, match="divide them by 100"):
        plots.ablation_heatmap(pd.DataFrame({"variant": ["a"], "acc": [60.0]}), metrics=("acc",))


def test_acc_against_seed_report_means_sd_bars_and_seed_diamonds():
    ours = pd.DataFrame({"dataset": ["MNIST"] * 3 + ["digits"] * 2, "seed": [0, 1, 2, 0, 1],
                         "acc": [0.97, 0.98, 0.99, 0.90, 0.92]})
    seed = {"MNIST": 0.819, "STL-10": 0.518}
    before = np.random.get_state()[1].copy()
    fig = plots.acc_against_seed_report(ours, seed, order=["MNIST", "STL-10", "digits"])
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the caller's global generator untouched
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["MNIST", "STL-10", "digits"]
    diamonds = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets()) == 2
                and mcolors.to_hex(c.get_facecolor()[0]) == mcolors.to_hex(plots._ACCENT)]
    np.testing.assert_allclose(diamonds[0].get_offsets(), [[0.819, 0], [0.518, 1]])
    # pointplot's mean markers and ± sd bars (a horizontal line per data set at its row)
    points = next(ln for ln in ax.get_lines() if ln.get_marker() == "o")
    means = {round(float(y)): float(x) for x, y in zip(points.get_xdata(), points.get_ydata())}
    assert means[0] == pytest.approx(0.98) and means[2] == pytest.approx(0.91) and np.isnan(means[1])
    bars = [np.asarray(ln.get_xdata(), dtype=float) for ln in ax.get_lines() if ln is not points]
    rows = [round(float(np.nanmean(ln.get_ydata()))) for ln in ax.get_lines() if ln is not points]
    spans = {row: [np.nanmin(x), np.nanmax(x)] for row, x in zip(rows, bars) if np.isfinite(x).any()}
    for row, values in ((0, [0.97, 0.98, 0.99]), (2, [0.90, 0.92])):
        sd = np.std(values, ddof=1)
        np.testing.assert_allclose(spans[row], [np.mean(values) - sd, np.mean(values) + sd])
    assert 1 not in spans  # STL-10 has no runs: no bar
    assert [t.get_text() for t in ax.texts] == ["not run here"]  # STL-10: the seed's value only
    assert ax.xaxis.get_major_formatter()(0.5, 0) == "50%"
    with pytest.raises(ValueError, match="divide them by 100"):
        plots.acc_against_seed_report(ours.assign(acc=ours["acc"] * 100), seed)
    with pytest.raises(ValueError, match="not in order"):
        plots.acc_against_seed_report(ours, seed, order=["MNIST"])


# ------------------------------------------------------------------------------------ saving


def test_save_figure_writes_png_and_svg_atomically_and_closes(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()  # a pyplot-managed figure must be released too
    ax.plot([0, 1], [0, 1])
    number = fig.number
    out = tmp_path / "figs" / "nested"
    assert [p.name for p in plots.save_figure(fig, out, "only")] == ["only.png"]  # PNG unless asked
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    number = fig.number
    paths = plots.save_figure(fig, out, "curve", formats=("png", "svg"))
    assert [p.name for p in paths] == ["curve.png", "curve.svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert b"<svg" in svg.read_bytes()[:1000]
    assert sorted(os.listdir(out)) == ["curve.png", "curve.svg", "only.png"]  # no temp files left
    assert not plt.fignum_exists(number)


def test_save_figure_overwrites_reproducibly_and_rejects_paths(tmp_path):
    def draw():
        return plots.cluster_histogram(np.array([0, 1, 1]), 2)

    first = plots.save_figure(draw(), tmp_path, "hist", formats=("png", "svg"))[1].read_bytes()
    second = plots.save_figure(draw(), tmp_path, "hist", formats=("png", "svg"))[1].read_bytes()
    assert first == second  # SVG carries no date / random ids: reruns leave git clean
    assert sorted(os.listdir(tmp_path)) == ["hist.png", "hist.svg"]
    with pytest.raises(ValueError, match="stem"):
        plots.save_figure(draw(), tmp_path, "sub/hist")
    with pytest.raises(ValueError, match="Figure"):
        plots.save_figure("not a figure", tmp_path, "x")


def test_save_figure_removes_temp_file_when_writing_fails(tmp_path):
    fig = plots.cluster_histogram(np.array([0]), 1)
    with pytest.raises(ValueError):
        plots.save_figure(fig, tmp_path, "bad", formats=("png", "nosuchformat"))
    assert sorted(os.listdir(tmp_path)) == ["bad.png"]
