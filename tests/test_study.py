"""The study: seed tables, notebook helpers, the sweep, and the papermill runner end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from sclib import report, seed, study, sweep
from sclib.config import ConfigError, make_config

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- seed tables ----------------------------------------------------------------------------------


def test_seed_tables_are_internally_consistent():
    # The report's Table 1 STL-10 row is its best ablation, temperatures (0.07, 0.05): a
    # transcription slip in either table breaks this equality.
    assert seed.TABLE2["temperatures (0.07, 0.05)"] == seed.TABLE1["stl10"]
    assert len(seed.TABLE2) == 12 and list(seed.TABLE2)[-1] == "base"
    for table in (seed.TABLE1, seed.TABLE2):
        for name, row in table.items():
            assert set(row) == set(seed.METRICS), name
            assert all(0 < v < 100 for v in row.values()), name
            assert row["ami"] <= row["nmi"], name  # AMI corrects NMI for chance, never up


def test_table1_row_labels_stand_ins_and_converts_to_fractions():
    label, row = seed.table1_row("cifar10")
    assert "CIFAR-10" in label and row["acc"] == 60.73
    label, row = seed.table1_row("digits")
    assert "MNIST" in label and "stand-in" in label and row == seed.TABLE1["mnist"]
    assert seed.table1_row("imagefolder") is None
    assert seed.as_fractions(row)["nmi"] == pytest.approx(0.839427)


# -- parameters and configs --------------------------------------------------------------------


def test_parse_params_types_and_errors():
    got = study.parse_params(["epochs=2", "heads=[10, 20]", "row-tau=0.07", "probe_epochs=5", "grid=none"],
                             known={"probe_epochs", "grid"})
    assert got["epochs"] == 2 and isinstance(got["epochs"], int)
    assert got["heads"] == [10, 20] and got["row_tau"] == 0.07 and got["probe_epochs"] == 5
    with pytest.raises(ConfigError, match="bogus"):
        study.parse_params(["bogus=1"], known=set())
    with pytest.raises(ConfigError, match="epochs"):
        study.parse_params(["epochs=two"], known=set())
    with pytest.raises(ConfigError, match="key=value"):
        study.parse_params(["epochs"], known=set())


def test_fit_milestones_keeps_preset_points_or_spreads_them():
    assert report.fit_milestones([5, 10, 20, 30], 30) == [5, 10, 20, 30]
    assert report.fit_milestones([5, 10, 20, 30], 25) == [5, 10, 20, 25]
    for epochs in (1, 2, 4, 7):
        points = report.fit_milestones([5, 10, 20, 30], epochs)
        assert points[-1] == epochs and points == sorted(set(points)) and points[0] >= 1


def test_run_config_prefers_explicit_values_over_preset():
    cfg = report.run_config("digits", "fast", "somewhere", epochs=3, batch_size=None)
    assert cfg.epochs == 3 and cfg.batch_size == make_config("digits").batch_size
    assert cfg.milestones[-1] == 3 and cfg.out == "somewhere"


def test_runner_refuses_parameters_it_sets_itself(tmp_path):
    with pytest.raises(ConfigError, match="run_dir"):
        study.run_study("digits", tmp_path / "out", params=["run_dir=elsewhere"])
    assert not (tmp_path / "out").exists()


# -- cluster tables ------------------------------------------------------------------------------


def _brute_purity(labels, assigned, cluster):
    members = labels[assigned == cluster]
    return max(np.sum(members == c) for c in np.unique(members)) / members.size


def test_cluster_table_best_and_worst_match_brute_force():
    rng = np.random.default_rng(0)
    # 6 clusters of 20 with purities 1.0, 0.9, ..., 0.5 (majority class = cluster id), plus a
    # 2-image cluster that is pure but too small to show.
    labels, assigned = [], []
    for c in range(6):
        wrong = 2 * c
        labels += [c] * (20 - wrong) + list(rng.choice([k for k in range(7) if k != c], wrong))
        assigned += [c] * 20
    labels += [6, 6]
    assigned += [6, 6]
    labels, assigned = np.array(labels), np.array(assigned)
    names = [f"class{c}" for c in range(7)]
    table = report.cluster_table(labels, assigned, names)
    for row in table:
        assert row["purity"] == pytest.approx(_brute_purity(labels, assigned, row["cluster"]))
        assert row["size"] == int(np.sum(assigned == row["cluster"]))
    best, worst = report.best_and_worst(table, count=2)
    assert [r["cluster"] for r in best] == [0, 1]
    assert [r["cluster"] for r in worst] == [5, 4]
    assert best[0]["label"] == "class0"
    few_best, few_worst = report.best_and_worst(table[:3], count=3)  # fewer clusters than 2 x count
    assert few_best and few_worst and not {r["cluster"] for r in few_best} & {r["cluster"] for r in few_worst}

    # Hungarian matching can give a cluster a class it barely holds; the label then says so.
    forced = report.cluster_table(np.array([0] * 10 + [0] * 6 + [1] * 4), np.array([0] * 10 + [1] * 10), ["a", "b"])
    assert {r["cluster"]: r["label"] for r in forced} == {0: "a", 1: "b, mostly a (60%)"}

    rows = report.grid_rows(best, assigned, per_cluster=5, seed=1)
    for r in rows:
        assert len(r["indices"]) == 5 and all(assigned[i] == r["cluster"] for i in r["indices"])
    assert rows == report.grid_rows(best, assigned, per_cluster=5, seed=1)


# -- sweep -----------------------------------------------------------------------------------------


def test_grid_validation_and_precedence(tmp_path):
    grid = {"base": {"epochs": 7, "batch_size": 64}, "variants": {"base": {}, "batch 128": {"batch_size": 128}}}
    variants = sweep.sweep_variants("digits", grid, tmp_path, epochs=3)
    by_name = {v.name: v for v in variants}
    assert by_name["base"].cfg.epochs == 3 and by_name["base"].cfg.batch_size == 64  # override > base
    assert by_name["batch 128"].cfg.batch_size == 128  # variant > base
    assert by_name["batch 128"].folder == "batch-128"
    assert Path(by_name["batch 128"].cfg.out) == tmp_path / "batch-128"
    with pytest.raises(ConfigError, match="'typo'.*row_ta"):
        sweep.sweep_variants("digits", {"variants": {"typo": {"row_ta": 1}}}, tmp_path)
    with pytest.raises(ConfigError, match="share the folder"):
        sweep.sweep_variants("digits", {"variants": {"batch 128": {}, "Batch-128": {}}}, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("variant:\n  base: {}\n")
    with pytest.raises(ConfigError, match="variants"):
        sweep.load_grid(bad)
    shipped = sweep.load_grid(ROOT / "ablations.yaml")
    assert "base" in shipped["variants"]
    assert len(sweep.sweep_variants("digits", ROOT / "ablations.yaml", tmp_path / "s")) == len(shipped["variants"])


def test_run_sweep_skips_finished_variants_and_tabulates(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(cfg, progress=True):
        calls.append(Path(cfg.out).name)
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        acc = 0.5 if "128" in out.name else 0.4
        (out / "metrics.json").write_text(json.dumps({"nmi": 0.3, "ami": 0.29, "ari": 0.2, "acc": acc, "epoch": cfg.epochs}))
        return {}

    monkeypatch.setattr("sclib.train.pretrain", fake_pretrain)
    grid = {"variants": {"base": {}, "batch 128": {"batch_size": 128}, "my own idea": {"row_tau": 0.2}}}
    sweep.run_sweep("digits", grid, tmp_path, epochs=2, log=lambda m: None)
    assert calls == ["base", "batch-128", "my-own-idea"]
    # an unfinished variant (fewer epochs than asked) is trained again, finished ones are skipped
    (tmp_path / "base" / "metrics.json").write_text(json.dumps({"nmi": 0, "ami": 0, "ari": 0, "acc": 0, "epoch": 1}))
    done = sweep.run_sweep("digits", grid, tmp_path, epochs=2, log=lambda m: None)
    assert calls[3:] == ["base"]
    assert [d["status"].startswith("skipped") for d in done] == [False, True, True]

    (tmp_path / "my-own-idea" / "metrics.json").unlink()  # unfinished: left out of the table
    table = sweep.ablation_table(tmp_path)
    assert list(table["variant"]) == ["base", "batch 128"]
    assert table.loc[1, "acc"] == 0.5
    assert table.loc[1, "seed_acc"] == pytest.approx(seed.TABLE2["batch 128"]["acc"] / 100)
    text = sweep.ablation_markdown(table)
    assert "| batch 128 | 30.00 | 29.00 | 20.00 | 50.00 | 2 | 48.85 |" in text


# -- the runner, end to end ------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sclib", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def _error_outputs(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.slow
def test_study_command_writes_the_report(tmp_path):
    out = tmp_path / "results" / "digits"
    proc = _cli("study", "--dataset", "digits", "--out", str(out), "--param", "epochs=2", "--param", "mlp_hidden=64",
                "--param", "image_size=8", "--param", "batch_size=128", "--param", "mlp_out=16",
                "--param", "probe_epochs=2", "--param", "max_points=300", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in study.STUDY_NOTEBOOKS:
        assert (out / f"{name}.ipynb").exists() and not _error_outputs(out / f"{name}.ipynb"), name
        page = (out / f"{name}.html").read_text()
        assert "<html" in page and "data:image/png;base64" in page, name
    figures = out / "run" / "figures"
    for stem in study.STUDY_FIGURES:
        png = figures / f"{stem}.png"
        assert png.exists() and png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_MAGIC, stem
        assert (figures / f"{stem}.svg").exists(), stem
    index = (out / "index.html").read_text()
    links = set(re.findall(r'href="([^"]+)"', index))
    for name in study.STUDY_NOTEBOOKS:
        assert f"{name}.html" in links
    assert "run/figures/fig2_probe.png" in links
    assert all((out / link).exists() for link in links)
    assert "preset" in index.lower() and "not comparable" in index.lower()

    summary = (out / "summary.md").read_text()
    report = json.loads((out / "run" / "eval.json").read_text())
    evaluated = report["heads"][report["evaluated_head"]]
    assert f"{100 * evaluated['acc']:.2f}" in summary and f"{100 * evaluated['nmi']:.2f}" in summary
    mnist = seed.TABLE1["mnist"]
    assert f"| {mnist['nmi']:.2f} | {mnist['ami']:.2f} | {mnist['ari']:.2f} | {mnist['acc']:.2f} |" in summary
    assert "83.9427" in summary and "51.8125" in summary  # the whole Table 1 for reference
    assert "fast" in summary and "NOT comparable" in summary and "device" in summary
    config = json.loads((out / "run" / "config.json").read_text())["config"]
    assert config["epochs"] == 2 and config["mlp_hidden"] == 64


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_and_names_the_cell(tmp_path):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    path = notebooks / "01_pretrain.ipynb"
    nb = nbformat.read(path, as_version=4)
    where = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(where + 1, nbformat.v4.new_code_cell('raise RuntimeError("planted failure")'))
    nb.cells[where + 1]["id"] = "planted"
    nbformat.write(nb, path)
    out = tmp_path / "out"
    proc = _cli("study", "--dataset", "digits", "--out", str(out), "--notebooks", str(notebooks), cwd=tmp_path)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sclib: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "01_pretrain" in errors[0] and "cell" in errors[0] and "planted failure" in errors[0]
    kept = _error_outputs(out / "01_pretrain.ipynb")
    assert kept and kept[0]["ename"] == "RuntimeError" and kept[0]["traceback"]
    assert (out / "01_pretrain.html").exists()
    assert not (out / "02_linear_probe.ipynb").exists() and not (out / "summary.md").exists()
    assert "failed" in (out / "index.html").read_text()


def test_committed_notebooks_have_no_outputs_and_one_parameters_cell():
    for name in study.ALL_NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "dataset" in tagged[0].source, name
