"""sclib.report.tables: the one percent format, mean ± std over seeds and table type; and that every page
that moved onto it renders exactly what the committed studies show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sclib.report import ablations, summary
from sclib.report.tables import Evaluation, Link, Table, clustering_table, heads_table, mean_std, pct
from sclib.run import paths

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


# -- the committed studies render exactly as before the move onto sclib.report.tables ----------------


@pytest.mark.parametrize("study", STUDIES, ids=[p.name for p in STUDIES])
def test_summary_and_index_of_a_committed_study_render_as_committed(study, tmp_path):
    copy = tmp_path / study.name
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("*.ipynb", "*.html"))
    shutil.copy(study / "index.html", copy / "index.html")
    for name in paths.ALL_NOTEBOOKS:  # the index lists the notebooks it finds
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


def _evaluation(seed: int, accs: list[float], scored: int = 0) -> Evaluation:
    heads = [{"head_size": 10 * 2**i, "clusters_used": 10 - i, "nmi": 0.5 + 0.1 * i, "ami": 0.5, "ari": 0.4,
              "acc": a} for i, a in enumerate(accs)]
    base = {"nmi": 0.3, "ami": 0.3, "ari": 0.2, "acc": 0.4}
    record = {"epoch": 5, "evaluated_head": scored, "heads": heads, "kmeans_features": base,
              "kmeans_pixels": {**base, "acc": 0.2}, "split": "validation", "classes": list("0123456789")}
    return Evaluation.from_json(record, seed)


def test_evaluation_record_knows_its_scored_head():
    e = _evaluation(3, [0.6, 0.7, 0.8], scored=1)
    assert e.scored is e.heads[1] and e.scored["acc"] == 0.7
    assert (e.seed, e.epoch, e.split, e.eval_images) == (3, 5, "validation", None)
    assert e.classes == tuple("0123456789") and e.warnings == ()


def test_clustering_and_heads_tables_are_the_mean_over_seeds():
    evaluations = [_evaluation(0, [0.6, 0.2]), _evaluation(1, [0.8, 0.4])]
    table = clustering_table(evaluations, "mnist")
    assert [row[0] for row in table.rows][:3] == ["seed 0", "seed 1", "mean ± std over 2 seeds"]
    assert table.rows[2][4] == f"70.00 ± {100 * np.std([0.6, 0.8], ddof=1):.2f}"  # ACC
    assert table.kinds == ["", "", "mean", "ref", "ref", "ref"] and "MNIST" in table.rows[-1][0]
    heads = heads_table(evaluations)
    assert heads.rows[0][0] == "head 0: 10 clusters (scored)" and heads.rows[1][0] == "head 1: 20 clusters"
    assert heads.rows[1][1] == "9.0" and heads.rows[1][5] == "30.00"  # clusters used and ACC, mean of 2 seeds
    assert clustering_table(evaluations[:1], "imagefolder").kinds == ["", "ref", "ref"]  # no Table 1 row


@pytest.mark.parametrize("folder", SWEEPS, ids=[p.parent.name for p in SWEEPS])
def test_ablation_table_renders_as_committed_in_notebook_06(folder):
    shown = _markdown_outputs(folder.parent / "06_ablations.ipynb")
    assert ablations.ablation_markdown(ablations.ablation_table(folder)) in shown
