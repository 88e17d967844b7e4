"""The front page (sclib.report.front) built from small synthetic study folders, in the committed format:
numbers equal the run files', a data set without a study shows its reason, links resolve, a
new study folder appears by itself, and the README's table is the same table."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from sclib import seed_report
from sclib.cli import main
from sclib.report import front, summary
from sclib.run.config import Recipe

METRICS = ("nmi", "ami", "ari", "acc")


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def make_study(results: Path, folder: str, dataset: str, seeds: list[int], note: str = "", device: str = "cpu",
               rng_seed: int = 0, evaluated: bool = True, cpu_seconds: bool = False) -> dict:
    """A study folder as ``study`` leaves it: study.json and run/seed<N>/{config,metrics,eval}.json,
    history.csv (with a ``cpu_seconds`` column if asked). Returns what a reader should see: per seed
    the scored head, the epoch seconds and the epoch CPU seconds."""
    rng = np.random.default_rng(rng_seed)
    out = results / folder
    _write(out / "study.json", {"dataset": dataset, "preset": "fast", "run_dir": "run", "seeds": seeds,
                                "config_overrides": {}, "config_file": None, "note": note, "probe_epochs": 100})
    for page in ("index.html", "summary.md"):
        (out / page).write_text("the study's own pages")
    truth = {"heads": [], "seconds": [], "cpu_seconds": []}
    for s in seeds:
        run = out / "run" / f"seed{s}"
        cfg = {**Recipe(dataset).resolve().to_dict(), "seed": s, "out": f"run/seed{s}"}
        _write(run / "config.json", {"config": cfg, "provenance": {"device": device, "world_size": 1,
                                                                  "git_commit": "abc", "sclib": "0.1.0"}})
        head = {m: float(rng.uniform(0.3, 0.95)) for m in METRICS}
        scored = {**head, "clusters_used": 10, "head": 0, "head_size": cfg["heads"][0]}
        _write(run / "metrics.json", {**scored, "epoch": cfg["epochs"], "num_classes": cfg["heads"][0]})
        if evaluated:
            other = {**{m: 0.1 for m in METRICS}, "clusters_used": 12, "head": 1, "head_size": cfg["heads"][1]}
            _write(run / "eval.json", {"epoch": cfg["epochs"], "evaluated_head": 0, "head_warning": None,
                                       "split": "test", "classes": [str(c) for c in range(cfg["heads"][0])],
                                       "heads": [scored, other], "kmeans_features": dict.fromkeys(METRICS, 0.2),
                                       "kmeans_pixels": dict.fromkeys(METRICS, 0.1)})
        seconds = rng.uniform(1.0, 30.0, size=cfg["epochs"])
        cpu = seconds * rng.uniform(0.9, 2.0, size=cfg["epochs"])
        with (run / "history.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "loss", "lr", "clusters_used", "images_per_s", "seconds"]
                            + ["cpu_seconds"] * cpu_seconds)
            writer.writerows([e + 1, 1.0, 0.1, 10, 100.0, sec] + [c] * cpu_seconds
                             for e, (sec, c) in enumerate(zip(seconds, cpu)))
        truth["heads"].append(head)
        truth["seconds"].append(seconds)
        truth["cpu_seconds"].append(cpu)
    return truth


def make_sweep(results: Path, folder: str, variants: dict[str, list[float]]) -> None:
    """``folder/sweep``: sweep.json and one metrics.json per variant and seed (ACC as given)."""
    sweep = results / folder / "sweep"
    names = [{"name": name, "folder": name.replace(" ", "-"), "config": {}} for name in variants]
    _write(sweep / "sweep.json", {"dataset": "mnist", "preset": "fast", "seeds": [0, 1], "variants": names})
    for v, accs in zip(names, variants.values()):
        for s, acc in enumerate(accs):
            _write(sweep / v["folder"] / f"seed{s}" / "metrics.json",
                   {"nmi": 0.5, "ami": 0.5, "ari": 0.4, "acc": acc, "epoch": 5})


def _mean_std(values) -> str:
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"


def _rows(markdown: str) -> list[list[str]]:
    """The cells of every Markdown table row, bold marks removed."""
    return [[c.strip().strip("*") for c in line.strip().strip("|").split(" | ")]
            for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("|---")]


@pytest.fixture
def results(tmp_path) -> tuple[Path, dict, dict]:
    results = tmp_path / "results"
    mnist = make_study(results, "mnist", "mnist", [0, 1, 2], note="official IDX files", rng_seed=1)
    cifar = make_study(results, "cifar10", "cifar10", [0, 1], note="train split JPEG q90; fast recipe, 2 threads",
                       device="NVIDIA H200", rng_seed=2)
    return results, mnist, cifar


def test_front_page_numbers_equal_the_run_files(results):
    results, mnist, cifar = results
    front.write_front(results)
    page = (results / "README.md").read_text()
    rows = _rows(page)
    for name, truth, seeds, note, device in (("MNIST", mnist, 3, "official IDX files", "cpu"),
                                              ("CIFAR-10", cifar, 2, "train split JPEG q90", "NVIDIA H200")):
        ours = next(r for r in rows if r[0] == name and r[1].startswith("fast"))
        assert ours[2:6] == [_mean_std([h[m] for h in truth["heads"]]) for m in METRICS]
        minutes = np.mean([s.sum() / 60 for s in truth["seconds"]])
        assert ours[6:9] == [str(seeds), f"{minutes:.1f} min on {device}", note]
        recipe = Recipe(name.lower().replace('-', '')).resolve()
        assert ours[1] == f"fast: {front.NETWORKS[recipe.backbone]}, {recipe.image_size} px, " \
                          f"{Recipe(name.lower().replace('-', '')).resolve().epochs} epochs"
        # the seed's Table 1 row right below ours
        key = name.lower().replace("-", "")
        theirs = rows[rows.index(ours) + 1]
        assert theirs[:6] == [name, front.SEED_RUN, *(f"{seed_report.TABLE1[key][m]:.2f}" for m in METRICS)]
    html_page = (results / "index.html").read_text()
    for value in _rows(page)[1][2:6]:
        assert f"<td>{value}</td>" in html_page  # the HTML table holds the same cells


def test_a_data_set_without_a_study_shows_its_reason_until_one_appears(results):
    results, _, _ = results
    front.write_front(results)
    page, html_page = (results / "README.md").read_text(), (results / "index.html").read_text()
    missing = page.split("## Data sets not run", 1)[1].split("##", 1)[0]
    assert f"- **CIFAR-20**: {front.NOT_RUN_YET}" in missing  # no reason of its own: the plain one
    assert f"- **STL-10**: {front.NOT_RUN['stl10']}" in missing
    assert "CIFAR-10" not in missing and "MNIST" not in missing
    assert html_page.count(html.escape(front.NOT_RUN["stl10"])) == 2  # in the table row and in the list
    # the table keeps the seed's row with the reason beside it
    stl = next(r for r in _rows(page) if r[0] == "STL-10")
    assert stl[1] == front.SEED_RUN and stl[8] == front.NOT_RUN["stl10"]

    truth = make_study(results, "cifar20", "cifar20", [0, 1, 2], rng_seed=3)
    front.write_front(results)
    page = (results / "README.md").read_text()
    assert "CIFAR-20" not in page.split("## Data sets not run", 1)[1].split("##", 1)[0]
    ours = next(r for r in _rows(page) if r[0] == "CIFAR-20" and r[1].startswith("fast"))
    assert ours[5] == _mean_std([h["acc"] for h in truth["heads"]])


def test_every_link_of_the_front_page_resolves(results):
    results, _, _ = results
    make_sweep(results, "mnist", {"base": [0.6, 0.62], "batch 128": [0.5, 0.56]})
    (results / "mnist" / "06_ablations.html").write_text("<html></html>")
    front.write_front(results)
    html_page = (results / "index.html").read_text()
    targets = set(re.findall(r'(?:href|src)="([^"]+)"', html_page))
    md_targets = set(re.findall(r"\]\(([^)]+)\)", (results / "README.md").read_text()))
    assert targets == md_targets | {"style.css", "README.md"}
    assert {"mnist/index.html", "mnist/run/seed2/history.csv", "cifar10/run/seed1/eval.json",
            "mnist/06_ablations.html", "mnist/sweep/batch-128/", "figures/acc_vs_seed.png"} <= targets
    assert [t for t in targets if not (results / t).exists()] == []
    png = (results / "figures" / "acc_vs_seed.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    front.write_front(results)  # rerun on the same folders: the same files, so git stays clean
    assert (results / "figures" / "acc_vs_seed.png").read_bytes() == png
    assert (results / "index.html").read_text() == html_page


def test_ablations_are_tabulated_from_the_sweep(results):
    results, _, _ = results
    make_sweep(results, "mnist", {"base": [0.6, 0.62], "batch 128": [0.5, 0.56]})
    front.write_front(results)
    page = (results / "README.md").read_text()
    assert "## Ablations on MNIST" in page
    row = next(r for r in _rows(page) if r[0].startswith("[batch 128]"))
    assert row[0] == "[batch 128](mnist/sweep/batch-128/)"
    assert row[5] == _mean_std([0.5, 0.56]) and row[6] == "50.0, 56.0"
    assert row[7] == f"{seed_report.TABLE2['batch 128']['acc']:.2f}"


def test_readme_table_is_the_front_page_table(results):
    results, mnist, _ = results
    readme = results.parent / "README.md"
    readme.write_text(f"# project\n\nintro\n\n{front.MARK_BEGIN}\nold table\n{front.MARK_END}\n\nafter\n")
    written = front.write_front(results)
    assert readme in written
    text = readme.read_text()
    assert text.startswith("# project\n\nintro\n\n") and text.endswith("\n\nafter\n") and "old table" not in text
    block = text.split(front.MARK_BEGIN, 1)[1].split(front.MARK_END, 1)[0]
    # the same rows as the front page, with links from the repository root
    page_rows = _rows((results / "README.md").read_text().split("![", 1)[0])
    assert [r[:-1] for r in _rows(block)] == [r[:-1] for r in page_rows]
    assert "[study](results/mnist/index.html)" in block
    assert _mean_std([h["acc"] for h in mnist["heads"]]) in block


def test_front_command_bad_input_exits_2_and_writes_nothing(tmp_path, results, capsys):
    results, _, _ = results
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert main(["front", "--results", str(results), "--readme", str(plain)]) == 2
    assert "no results table" in capsys.readouterr().err
    assert not (results / "index.html").exists() and plain.read_text() == "no markers\n"
    assert main(["front", "--results", str(tmp_path / "nothing")]) == 2
    assert "holds no evaluated study" in capsys.readouterr().err
    assert main(["front", "--results", str(results)]) == 0
    assert front.is_front_page(results / "index.html")


def test_a_study_without_evaluated_runs_is_listed_not_tabulated(results):
    results, _, _ = results
    make_study(results, "half_done", "digits", [0], evaluated=False)
    front.write_front(results)
    page = (results / "README.md").read_text()
    assert "- `half_done/`: holds no evaluated runs" in page
    assert not [r for r in _rows(page) if r[0].startswith("digits")]


def test_a_study_written_beside_the_front_page_refreshes_it(results, tmp_path):
    from sclib.cli import _refresh_front

    results, _, _ = results
    make_study(results, "cifar20", "cifar20", [0, 1], rng_seed=5)
    _refresh_front(results / "cifar20", results=False)  # no front page there yet: nothing written
    assert not (results / "index.html").exists()
    front.write_front(results)
    make_study(results, "stl10", "stl10", [0, 1], rng_seed=6)
    _refresh_front(results / "stl10", results=False)  # as `study --out results/stl10` ends
    assert "- **STL-10**" not in (results / "README.md").read_text()
    elsewhere = tmp_path / "runs"
    make_study(elsewhere, "digits", "digits", [0, 1], rng_seed=7)
    _refresh_front(elsewhere / "digits", results=True)  # `study --results` always writes one
    assert front.is_front_page(elsewhere / "index.html")


@pytest.mark.parametrize("device", ["cpu", "NVIDIA H200"])
def test_training_cost_is_in_core_minutes_where_cpu_time_was_recorded(tmp_path, device):
    results = tmp_path / "results"
    truth = make_study(results, "cifar10", "cifar10", [0, 1, 2], device=device, cpu_seconds=True, rng_seed=3)
    old = make_study(results, "mnist", "mnist", [0, 1], rng_seed=4)  # history.csv without cpu_seconds
    front.write_front(results)
    rows = _rows((results / "README.md").read_text())
    cifar = next(r for r in rows if r[0] == "CIFAR-10" and r[1].startswith("fast"))
    wall = np.mean([s.sum() / 60 for s in truth["seconds"]])
    cores = np.mean([c.sum() / 60 for c in truth["cpu_seconds"]])
    # a CPU's budget is its CPU time; a GPU run's cost stays in wall minutes
    expected = f"{cores:.1f} core-min ({wall:.1f} min) on cpu" if device == "cpu" else f"{wall:.1f} min on {device}"
    assert cifar[7] == expected
    mnist = next(r for r in rows if r[0] == "MNIST" and r[1].startswith("fast"))
    assert mnist[7] == f"{np.mean([s.sum() / 60 for s in old['seconds']]):.1f} min on cpu"
    line = dict(summary.provenance(summary.load_study(results / "cifar10")))["training time"]
    per_seed = ", ".join(f"{c.sum() / 60:.1f}" for c in truth["cpu_seconds"])
    assert line.startswith(per_seed + " core-minutes per seed (CPU time); ")
    assert "core-minutes" not in dict(summary.provenance(summary.load_study(results / "mnist")))["training time"]


def _refined(study: Path, seeds: list[int], accs: list[float], self_label: list[float] | None = None) -> None:
    """refine/eval.json per seed as ``python -m sclib refine`` writes it (scored ACC as given)."""
    for s, acc in zip(seeds, accs):
        record = {"scored": {m: acc for m in METRICS}, "cpu_seconds": 120.0 + s, "stage": "neighbour consistency"}
        if self_label is not None:
            record["self_label"] = {**{m: self_label[s] for m in METRICS}, "cpu_seconds": 600.0}
        _write(study / "run" / f"seed{s}" / "refine" / "eval.json", record)


@pytest.mark.parametrize("self_label", [None, [0.7, 0.72, 0.74]])
def test_the_second_stage_is_its_own_row_under_self_classifier(tmp_path, self_label):
    results = tmp_path / "results"
    make_study(results, "cifar10", "cifar10", [0, 1, 2], cpu_seconds=True, rng_seed=5)
    _refined(results / "cifar10", [0, 1, 2], [0.5, 0.52, 0.54], self_label)
    front.write_front(results)
    rows = _rows((results / "README.md").read_text())
    ours = [r for r in rows if r[0] == "CIFAR-10" and r[1].startswith("fast")]
    assert ours[1][1].endswith("+ neighbour consistency")
    assert ours[1][2:6] == [_mean_std([0.5, 0.52, 0.54])] * 4
    assert ours[1][7] == f"+ {np.mean([120.0, 121.0, 122.0]) / 60:.1f} core-min"
    assert len(ours) == (3 if self_label else 2)
    if self_label:
        assert ours[2][1].endswith("+ self-labelling") and ours[2][5] == _mean_std(self_label)
    # the seed's row still follows the first of ours; Self-Classifier alone comes first
    assert rows[rows.index(ours[-1]) + 1][1] == front.SEED_RUN
    summary.write_summary(results / "cifar10")
    table = _rows((results / "cifar10" / "summary.md").read_text())
    labels = [r[0] for r in table]
    mean = labels.index("mean ± std over 3 seeds")
    assert labels[mean + 1] == "Self-Classifier + neighbour consistency (3 seeds)"
    assert table[mean + 1][1:5] == [_mean_std([0.5, 0.52, 0.54])] * 4


def test_a_second_stage_run_by_some_seeds_only_gets_no_row(tmp_path):
    results = tmp_path / "results"
    make_study(results, "cifar10", "cifar10", [0, 1, 2], rng_seed=6)
    _refined(results / "cifar10", [0, 1], [0.5, 0.52])
    front.write_front(results)
    rows = _rows((results / "README.md").read_text())
    assert not any("neighbour consistency" in r[1] for r in rows)


def test_every_committed_number_is_one_tidy_csv_row(tmp_path):
    import pandas as pd

    results = tmp_path / "results"
    cifar = make_study(results, "cifar10", "cifar10", [0, 1], rng_seed=7)
    _refined(results / "cifar10", [0, 1], [0.5, 0.52])
    mnist = make_study(results, "mnist", "mnist", [0, 1, 2], rng_seed=8)
    front.write_front(results)
    table = pd.read_csv(results / "results.csv")
    assert set(table.columns) >= {"dataset", "study", "recipe", "seed", "split", "stage", "head", "metric", "value"}
    for dataset, truth, seeds in (("cifar10", cifar, [0, 1]), ("mnist", mnist, [0, 1, 2])):
        scored = table[(table.dataset == dataset) & table["head"].str.endswith("scored", na=False)
                       & (table.stage == "Self-Classifier")]
        for seed, head in zip(seeds, truth["heads"]):
            got = scored[scored.seed == seed].set_index("metric")["value"].to_dict()
            assert got == pytest.approx(head)
    second = table[table.stage == "Self-Classifier + neighbour consistency"]
    assert sorted(second.dataset.unique()) == ["cifar10"]
    assert second[second.metric == "acc"].sort_values("seed")["value"].tolist() == pytest.approx([0.5, 0.52])
    baselines = table[table.stage == "k-means on pixels"]
    assert len(baselines) == 4 * 5  # 4 metrics x 5 seeds in all
