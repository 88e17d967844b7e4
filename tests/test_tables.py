"""sclib.tables: the one percent format, mean ± std over seeds and table type; and that every page
that moved onto it renders exactly what the committed studies show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sclib import plots, report, runs, summary, sweep
from sclib.tables import Link, Table, mean_std, pct

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "results").glob("*/study.json"))
SWEEPS = sorted(p.parent for p in (ROOT / "results").glob("*/sweep/sweep.json"))


@pytest.mark.parametrize("value, std, text", [
    (0.839427, None, "83.94"), (0.5, 0.0123, "50.00 ± 1.23"), (-0.02, None, "-2.00"), (1.0, float("nan"), "100.00"),
    (None, None, "n/a"), (float("nan"), 0.1, "n/a"), (float("inf"), None, "n/a"),
])
def test_pct_two_decimals_and_missing_values(value, std, text):
    assert pct(value, std) == text


def test_mean_std_is_the_sample_std_over_seeds():
    values = [0.91, 0.905, 0.8981]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert std > np.std(values)  # ddof 1, not the population std
    one = mean_std([0.5])
    assert one[0] == 0.5 and np.isnan(one[1])
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])


def test_table_markdown_and_html_say_the_same():
    table = Table(["data set", "ACC", "note", "study"],
                  [["MNIST", "98.20 ± 0.70", "a | b", (Link("study", "mnist/index.html"), Link("seed 0", "s0/x.json"))],
                   ["seed report", "81.90", "GPU", ""]],
                  kinds=["mean", "ref"], align="lrll")
    md = table.markdown().splitlines()
    assert md[0] == "| data set | ACC | note | study |"
    assert md[1] == "|---|---:|---|---|"
    assert md[2] == ("| **MNIST** | **98.20 ± 0.70** | **a \\| b** | "
                     "**[study](mnist/index.html), [seed 0](s0/x.json)** |")
    assert md[3] == "| seed report | 81.90 | GPU |  |"
    page = table.html()
    assert '<tr class="mean"><td>MNIST</td><td>98.20 ± 0.70</td><td class="l">a | b</td>' in page
    assert '<a href="mnist/index.html">study</a>, <a href="s0/x.json">seed 0</a>' in page
    assert '<tr class="ref">' in page and "<th>data set</th><th>ACC</th><th class=\"l\">note</th>" in page
    assert Table(["a", "b"], [["<x>", "&"]]).html().count("&lt;x&gt;") == 1


def test_table_refuses_ragged_rows_and_bad_alignment():
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        Table(["a", "b"], [["1"]])
    with pytest.raises(ValueError, match="align"):
        Table(["a", "b"], [["1", "2"]], align="lc")


# -- the committed studies render exactly as before the move onto sclib.tables ----------------


@pytest.mark.parametrize("study", STUDIES, ids=[p.name for p in STUDIES])
def test_summary_and_index_of_a_committed_study_render_as_committed(study, tmp_path):
    copy = tmp_path / study.name
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("*.ipynb", "*.html"))
    shutil.copy(study / "index.html", copy / "index.html")
    for name in runs.ALL_NOTEBOOKS:  # the index lists the notebooks it finds
        if (study / f"{name}.ipynb").exists():
            (copy / f"{name}.ipynb").write_text("{}")
    summary.write_summary(copy)
    summary.write_index(copy)
    # the time each report step took is not in the run files; everything else is
    committed = [line for line in (study / "summary.md").read_text().splitlines() if "**report steps**" not in line]
    assert (copy / "summary.md").read_text().splitlines() == committed
    # figure captions describe how figures are drawn now; the committed figures are redrawn on re-rendering
    def text(page: Path) -> list[str]:
        return [line for line in page.read_text().splitlines() if not line.startswith("<figure>")]

    assert text(copy / "index.html") == text(study / "index.html")


def _markdown_outputs(notebook: Path) -> list[str]:
    nb = json.loads(notebook.read_text())
    return ["".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"] if c["cell_type"] == "code"
            for o in c.get("outputs", [])]


@pytest.mark.parametrize("study", STUDIES, ids=[p.name for p in STUDIES])
def test_notebook_03_tables_render_as_committed(study):
    runs = report.open_runs(study / "run")
    reports = [json.loads(paths.eval.read_text()) for _, paths in runs]
    shown = _markdown_outputs(study / "03_clustering_metrics.ipynb")
    rows = report.clustering_rows(reports, [cfg.seed for cfg, _ in runs], runs[0][0].dataset)
    assert plots.metrics_table_markdown(rows, label="run (percent)") in shown
    heads = plots.metrics_table_markdown(report.heads_rows(reports[0]), label=f"head, seed {runs[0][0].seed} (percent)")
    assert heads in shown


@pytest.mark.parametrize("folder", SWEEPS, ids=[p.parent.name for p in SWEEPS])
def test_ablation_table_renders_as_committed_in_notebook_06(folder):
    shown = _markdown_outputs(folder.parent / "06_ablations.ipynb")
    assert sweep.ablation_markdown(sweep.ablation_table(folder)) in shown
