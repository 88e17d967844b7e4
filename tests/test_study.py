"""The study: seed tables, notebook helpers, the sweep, and the papermill runner end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest

from sclib import seed_report
from sclib.report import ablations, study, sweep
from sclib.report import notebook as report
from sclib.run import files, paths, records
from sclib.run.config import ConfigError, Recipe
from sclib.run.files import write_json

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_FIGURES = ("fig1_training", "fig2_probe", "confusion", "fig4a_tsne", "fig4a_tsne_clusters", "fig4a_umap",
                 "fig4a_umap_clusters", "fig4b_histogram", "fig3_clusters_best", "fig3_clusters_worst")


def _kernel() -> str:
    return study.ensure_kernel()


# -- seed tables ----------------------------------------------------------------------------------


def test_seed_tables_are_internally_consistent():
    # The report's Table 1 STL-10 row is its best ablation, temperatures (0.07, 0.05): a
    # transcription slip in either table breaks this equality.
    assert seed_report.TABLE2["temperatures (0.07, 0.05)"] == seed_report.TABLE1["stl10"]
    assert len(seed_report.TABLE2) == 12 and list(seed_report.TABLE2)[-1] == "base"
    for table in (seed_report.TABLE1, seed_report.TABLE2):
        for name, row in table.items():
            assert set(row) == set(seed_report.METRICS), name
            assert all(0 < v < 100 for v in row.values()), name
            assert row["ami"] <= row["nmi"], name  # AMI corrects NMI for chance, never up


def test_table1_row_labels_stand_ins_and_converts_to_fractions():
    label, row = seed_report.table1_row("cifar10")
    assert "CIFAR-10" in label and row["acc"] == 60.73
    label, row = seed_report.table1_row("digits")
    assert "MNIST" in label and "stand-in" in label and row == seed_report.TABLE1["mnist"]
    assert seed_report.table1_row("imagefolder") is None
    assert seed_report.as_fractions(row)["nmi"] == pytest.approx(0.839427)


# -- parameters ----------------------------------------------------------------------------------


def _checked_parameters(name: str) -> list[tuple[str, str]]:
    """(keyword, value name) of the notebook's ``report.check_parameters(...)`` call, in order."""
    import ast

    calls = [node for node in ast.walk(ast.parse((ROOT / "notebooks" / f"{name}.py").read_text()))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "report.check_parameters"]
    assert len(calls) == 1, name
    return [(kw.arg, ast.unparse(kw.value)) for kw in calls[0].keywords]


@pytest.mark.parametrize("name", paths.ALL_NOTEBOOKS)
def test_every_notebook_checks_every_parameter_it_declares_before_using_any(name):
    import jupytext

    declared = study.notebook_parameters(ROOT / "notebooks" / f"{name}.ipynb")
    checked = _checked_parameters(name)
    assert {k for k, _ in checked} == declared and all(k == v for k, v in checked), name
    code = [c.source for c in jupytext.read(ROOT / "notebooks" / f"{name}.py").cells if c.cell_type == "code"]
    at = next(i for i, src in enumerate(code) if "report.check_parameters(" in src)
    assert "parameters" in code[at - 1] or "dataset =" in code[at - 1]  # the cell right after the parameters
    defaults: dict = {}
    exec(code[at - 1], {}, defaults)  # the parameters cell's own values pass
    report.check_parameters(**{k: defaults[k] for k in declared})


PARAMETER_VALUES = [  # (name, value, accepted): the three examples first
    ("seeds", 1, False), ("config_overrides", "{epochs: 1}", False), ("seeds", "01", False),
    ("seeds", [0, 1], True), ("seeds", [], False), ("seeds", [True], False), ("seeds", [0, "1"], False),
    ("seeds", (0, 1), False), ("config_overrides", {"epochs": 1}, True), ("config_overrides", None, False),
    ("train", False, True), ("train", "False", False), ("train", 0, False),
    ("probe_epochs", 20, True), ("probe_epochs", 0, False), ("probe_epochs", "20", False),
    ("probe_epochs", 2.5, False), ("max_points", True, False), ("images_per_cluster", -1, False),
    ("clusters_per_grid", 3, True), ("show_seed", None, True), ("show_seed", 1, True), ("show_seed", 1.0, False),
    ("seed", "0", False), ("seed", 0, True), ("run_dir", None, True), ("run_dir", "runs/x", True),
    ("run_dir", 3, False), ("sweep_dir", ["a"], False), ("grid", None, True), ("config_file", 1, False),
    ("device", "gpu", False), ("device", "cpu", True), ("dataset", 1, False), ("preset", None, False),
    ("dataset", "foo", False), ("dataset", "cifar10", True), ("dataset", "CIFAR10", False), ("preset", "gpu", True),
    ("preset", "fastest", False),
]


@pytest.mark.parametrize("name", [n for n in paths.ALL_NOTEBOOKS
                                  if "dataset" in study.notebook_parameters(ROOT / "notebooks" / f"{n}.ipynb")])
def test_an_unknown_data_set_is_named_as_such_not_as_a_missing_run_folder(name):
    """``-p dataset foo`` reported a missing ../runs/lab/foo; each notebook's check names the data sets."""
    with pytest.raises(ConfigError, match=r"^parameter dataset must be one of the data sets digits, .*got 'foo'"):
        report.check_parameters(**(_notebook_defaults(name) | {"dataset": "foo"}))


def _notebook_defaults(name: str) -> dict:
    """A notebook's parameters cell, run: the values it declares."""
    import jupytext

    code = [c.source for c in jupytext.read(ROOT / "notebooks" / f"{name}.py").cells if c.cell_type == "code"]
    at = next(i for i, src in enumerate(code) if "report.check_parameters(" in src)
    defaults: dict = {}
    exec(code[at - 1], {}, defaults)
    return {k: defaults[k] for k, _ in _checked_parameters(name)}


@pytest.mark.parametrize("name, value, accepted", PARAMETER_VALUES)
def test_a_parameter_of_the_wrong_kind_is_refused_in_one_line_that_says_how_to_pass_it(name, value, accepted):
    if accepted:
        report.check_parameters(**{name: value})
        return
    with pytest.raises(ConfigError) as err:
        report.check_parameters(**{name: value})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"parameter {name} must be ") and repr(value) in message
    assert re.search(rf'pass it as (-p {name} \S+|-y "{name}: .+")$', message), message


def test_every_parameter_kind_is_covered():
    assert {name for name, _, _ in PARAMETER_VALUES} == set(report.PARAMETERS)
    declared = set().union(*(study.notebook_parameters(ROOT / "notebooks" / f"{n}.ipynb") for n in paths.ALL_NOTEBOOKS))
    assert declared == set(report.PARAMETERS)


@pytest.mark.slow
@pytest.mark.parametrize("argv, hint", [
    (["-p", "seeds", "1"], '-y "seeds: [0, 1]"'),
    (["-p", "config_overrides", "{epochs: 1}"], '-y "config_overrides: {epochs: 1}"'),
    (["-p", "seeds", "01"], '-y "seeds: [0, 1]"'),
])
def test_papermill_with_a_wrong_parameter_stops_at_the_check_before_training(tmp_path, argv, hint):
    """The issue's examples, as typed: a TypeError deep inside, or seeds 0 and 1 trained from "01"."""
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "papermill"), str(ROOT / "notebooks" / "01_pretrain.ipynb"),
                           str(tmp_path / "out.ipynb"), "--cwd", str(tmp_path), "-k", _kernel(), *argv,
                           "-p", "run_dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"ConfigError: parameter {argv[1]} must be" in proc.stderr and hint in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # nothing was trained


def test_parse_params_takes_notebook_parameters_and_sends_training_ones_to_their_flags():
    got = study.parse_params(["probe_epochs=5", "max_points=300", "show-seed=1"],
                             known={"probe_epochs", "max_points", "show_seed"})
    assert got == {"probe_epochs": 5, "max_points": 300, "show_seed": 1}
    with pytest.raises(ConfigError, match="training parameter: pass it as --row-tau"):
        study.parse_params(["row_tau=0.07"], known={"probe_epochs"})
    with pytest.raises(ConfigError, match="set by the runner"):
        study.parse_params(["run_dir=elsewhere"], known={"run_dir"})
    with pytest.raises(ConfigError, match=r"bogus.*they take probe_epochs"):
        study.parse_params(["bogus=1"], known={"probe_epochs"})
    with pytest.raises(ConfigError, match="key=value"):
        study.parse_params(["probe_epochs"], known={"probe_epochs"})


# every notebook parameter a user may pass with --param, a value of the wrong kind for it
PARAM_MISTAKES = [("probe_epochs", "abc"), ("probe_epochs", "0"), ("max_points", "2.5"), ("show_seed", "-1"),
                  ("clusters_per_grid", "[3]"), ("images_per_cluster", "yes"), ("show_seed", "1.5"),
                  ("max_points", "0")]


@pytest.mark.parametrize("key, raw", PARAM_MISTAKES)
def test_a_study_refuses_a_wrong_param_value_before_training_in_param_syntax(tmp_path, key, raw):
    """Found in notebook 02, a bad value would come after every seed trained in notebook 01."""
    with pytest.raises(ConfigError) as err:
        study.run_study(Recipe("digits"), [0], tmp_path / "out", params=[f"{key}={raw}"])
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--param {key}={raw} must be ")
    assert re.search(rf"e\.g\. --param {key}=\S+$", message), message
    assert not (tmp_path / "out").exists()
    # the suggested value is accepted
    suggested = message.rsplit("--param ", 1)[1]
    assert study.parse_params([suggested], known={key}) != {}


def test_every_user_param_has_a_mistake_case():
    import typing

    from sclib.run.config import Config

    user = set(report.PARAMETERS) - set(study.RUNNER_PARAMS) - set(typing.get_type_hints(Config))  # --param's
    assert user and user <= {key for key, _ in PARAM_MISTAKES}


def test_runner_refuses_bad_parameters_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError, match="run_dir"):
        study.run_study(Recipe("digits"), [0], tmp_path / "out", params=["run_dir=elsewhere"])
    with pytest.raises(ConfigError, match="seed twice"):
        study.run_study(Recipe("digits"), [0, 0], tmp_path / "out")
    with pytest.raises(ConfigError, match="epochs must be a positive"):
        study.run_study(Recipe("digits", overrides={"epochs": 0}), [0], tmp_path / "out")
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
    assert {r["cluster"]: (r["label"], r.get("mostly")) for r in forced} == {0: ("a", None), 1: ("b", ("a", 0.6))}
    assert report.grid_rows(forced, np.array([0] * 10 + [1] * 10), per_cluster=2)[1]["mostly"] == ("a", 0.6)

    rows = report.grid_rows(best, assigned, per_cluster=5, seed=1)
    for r in rows:
        assert len(r["indices"]) == 5 and all(assigned[i] == r["cluster"] for i in r["indices"])
    assert rows == report.grid_rows(best, assigned, per_cluster=5, seed=1)
    # with only a sample of the images at hand, rows index into that sample
    available = np.flatnonzero(np.arange(len(assigned)) % 3 == 0)
    for r in report.grid_rows(best, assigned, available, per_cluster=20):
        picked = available[r["indices"]]
        assert all(assigned[i] == r["cluster"] for i in picked)
        assert len(picked) == np.sum(assigned[available] == r["cluster"])


# -- sweep -----------------------------------------------------------------------------------------


def test_grid_validation_and_precedence(tmp_path):
    grid = {"base": {"epochs": 7, "batch_size": 64}, "variants": {"base": {}, "batch 128": {"batch_size": 128}}}
    variants = sweep.sweep_variants(Recipe("digits", overrides={"epochs": 3}), grid, tmp_path, seeds=[0, 4])
    by_name = {v.name: v for v in variants}
    base, batch = by_name["base"].configs, by_name["batch 128"].configs
    assert base[0].epochs == 3 and base[0].batch_size == 64  # flags > grid base > recipe
    assert batch[0].batch_size == 128  # variant > base
    assert by_name["batch 128"].folder == "batch-128"
    assert [c.seed for c in batch] == [0, 4]
    assert [Path(c.out) for c in batch] == [tmp_path / "batch-128" / "seed0", tmp_path / "batch-128" / "seed4"]
    with pytest.raises(ConfigError, match=r"'typo'.*row_ta"):
        sweep.sweep_variants(Recipe("digits"), {"variants": {"typo": {"row_ta": 1}}}, tmp_path)
    with pytest.raises(ConfigError, match="share the folder"):
        sweep.sweep_variants(Recipe("digits"), {"variants": {"batch 128": {}, "Batch-128": {}}}, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("variant:\n  base: {}\n")
    with pytest.raises(ConfigError, match="variants"):
        sweep.load_grid(bad)
    shipped = sweep.load_grid(ROOT / "ablations.yaml")
    assert "base" in shipped["variants"]
    variants = sweep.sweep_variants(Recipe("digits"), ROOT / "ablations.yaml", tmp_path / "s")
    assert len(variants) == len(shipped["variants"])


def test_run_sweep_skips_finished_runs_and_tabulates_mean_and_std(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(cfg, progress=True):
        calls.append((Path(cfg.out).parent.name, cfg.seed))
        acc = (0.5 if cfg.batch_size == 128 else 0.4) + 0.1 * cfg.seed
        write_json(Path(cfg.out) / "config.json", {"config": cfg.to_dict()})  # as a real run records it
        write_json(Path(cfg.out) / "metrics.json",
                   {"nmi": 0.3, "ami": 0.29, "ari": 0.2, "acc": acc, "epoch": cfg.epochs})
        return {}

    monkeypatch.setattr("sclib.train.pretrain", fake_pretrain)
    grid = {"variants": {"base": {}, "batch 128": {"batch_size": 128}, "my own idea": {"row_tau": 0.2}}}
    recipe = Recipe("digits", overrides={"epochs": 2})
    sweep.run_sweep(recipe, grid, tmp_path, seeds=[0, 1], log=lambda m: None)
    assert calls == [("base", 0), ("base", 1), ("batch-128", 0), ("batch-128", 1),
                     ("my-own-idea", 0), ("my-own-idea", 1)]
    # an unfinished run (fewer epochs than asked) is trained again, finished ones are skipped
    write_json(tmp_path / "base" / "seed1" / "metrics.json", {"nmi": 0, "ami": 0, "ari": 0, "acc": 0, "epoch": 1})
    done = sweep.run_sweep(recipe, grid, tmp_path, seeds=[0, 1], log=lambda m: None)
    assert calls[6:] == [("base", 1)]
    assert [d["status"].startswith("skipped") for d in done] == [True, False, True, True, True, True]

    for name in ("seed0", "seed1"):  # unfinished: left out of the table
        (tmp_path / "my-own-idea" / name / "metrics.json").unlink()
    table = ablations.ablation_table(tmp_path)
    assert list(table["variant"]) == ["base", "batch 128"]
    assert table.loc[1, "acc"] == pytest.approx(0.55)
    assert table.loc[1, "acc_std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert table.loc[1, "seed_report_acc"] == pytest.approx(seed_report.TABLE2["batch 128"]["acc"] / 100)
    text = ablations.ablation_markdown(table)
    assert "| batch 128 | 2 | 30.00 ± 0.00 | 29.00 ± 0.00 | 20.00 ± 0.00 | 55.00 ± 7.07 | 50.0, 60.0 | 48.85 |" in text


# -- the runner, end to end ------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sclib", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def _error_outputs(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


TINY_FLAGS = ("--batch-size", "128", "--image-size", "8", "--mlp-hidden", "64", "--mlp-out", "16", "--epochs", "2")


@pytest.mark.slow
def test_study_command_trains_the_seeds_and_writes_the_report(tmp_path):
    out = tmp_path / "results" / "digits"
    proc = _cli("study", "--dataset", "digits", "--out", str(out), *TINY_FLAGS, "--seeds", "0", "1",
                "--param", "probe_epochs=2", "--param", "max_points=300", "--note", "a tiny check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = len(paths.STUDY_NOTEBOOKS)
    for k, name in enumerate(paths.STUDY_NOTEBOOKS, start=1):  # each notebook announced as step k of N
        assert f"study: [{k}/{steps}] {name} ..." in proc.stderr and f"study: [{k}/{steps}] {name} done" in proc.stderr
    assert "IPKernelApp" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr  # no kernel notices
    assert "seed1: epoch 2/2" in proc.stderr
    for name in paths.STUDY_NOTEBOOKS:
        assert (out / f"{name}.ipynb").exists() and not _error_outputs(out / f"{name}.ipynb"), name
        page = (out / f"{name}.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and 'href="style.css"' in page and len(page) < 120_000, name
    for stem in STUDY_FIGURES:  # one PNG per figure, which pages and notebooks link to instead of copying
        png = out / "run" / "figures" / f"{stem}.png"
        assert png.exists() and png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_MAGIC, stem
    assert 'src="run/figures/fig1_training.png"' in (out / "01_pretrain.html").read_text()
    assert "data:image/png;base64" not in (out / "04_embeddings.html").read_text()

    index = (out / "index.html").read_text()
    targets = set(re.findall(r'(?:href|src)="([^"]+)"', index))
    assert all((out / t).exists() for t in targets), [t for t in targets if not (out / t).exists()]
    assert {f"{n}.html" for n in paths.STUDY_NOTEBOOKS} <= targets and "run/seed1/config.json" in targets
    assert index.count("<table>") >= 4 and "<pre>" not in index  # rendered tables, not Markdown in a box
    captions = re.findall(r"<figcaption>([^<]+)</figcaption>", index)
    assert len(captions) == len(STUDY_FIGURES) and not any(c.startswith("fig") for c in captions)
    for fact in ("a tiny check", "commit", "torch", "cpu", "minutes per seed"):
        assert fact in index, fact

    summary = (out / "summary.md").read_text()
    shown = "\n".join("".join(o.get("data", {}).get("text/markdown", "")) for c in json.loads(
        (out / "03_clustering_metrics.ipynb").read_text())["cells"] for o in c.get("outputs", []))
    for header in ("| run | NMI | AMI | ARI | ACC |", "| head | clusters used | NMI | AMI | ARI | ACC |"):
        block = next(b.strip() for b in summary.split("\n\n") if b.strip().startswith(header))
        assert block in shown, header  # notebook 03 shows the summary's clustering and heads tables
    reports = [json.loads((out / "run" / f"seed{s}" / "eval.json").read_text()) for s in (0, 1)]
    accs = [r["heads"][r["evaluated_head"]]["acc"] for r in reports]
    for acc in accs:
        assert f"{100 * acc:.2f}" in summary
    assert f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}" in summary
    mnist = seed_report.TABLE1["mnist"]
    assert f"| {mnist['nmi']:.2f} | {mnist['ami']:.2f} | {mnist['ari']:.2f} | {mnist['acc']:.2f} |" in summary
    assert "overrides" in summary and "epochs 2" in summary
    for s in (0, 1):
        config = json.loads((out / "run" / f"seed{s}" / "config.json").read_text())["config"]
        assert config["epochs"] == 2 and config["mlp_hidden"] == 64 and config["seed"] == s
    assert "torch==" in (out / "requirements.lock.txt").read_text()


@pytest.mark.slow
def test_runs_trained_elsewhere_render_without_checkpoints_or_data(tmp_path):
    """A GPU machine's run folders, copied home without checkpoints, become a report with no data at hand."""
    import _data_formats as fmt

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    fmt.write_mnist(data / "MNIST" / "raw", rng.integers(0, 255, (600, 28, 28), dtype=np.uint8),
                    rng.integers(0, 10, 600).astype(np.uint8), rng.integers(0, 255, (200, 28, 28), dtype=np.uint8),
                    rng.integers(0, 10, 200).astype(np.uint8))
    box = tmp_path / "gpu-box" / "mnist"
    common = ("--dataset", "mnist", "--data-root", str(data), "--device", "cpu", "--small-width", "4",
              "--image-size", "14", "--batch-size", "100", "--mlp-hidden", "32", "--mlp-out", "16", "--epochs", "2")
    for args in (("pretrain", *common, "--seeds", "0", "1", "--out", str(box), "--no-progress"),
                 ("evaluate", "--run", str(box)), ("probe", "--run", str(box), "--all-kept", "--epochs", "3")):
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    home = tmp_path / "home" / "mnist"
    shutil.copytree(box, home, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.rmtree(data)  # neither the data set nor a checkpoint is here now
    out = tmp_path / "report"
    proc = _cli("study", "--runs", str(home), "--out", str(out), "--param", "max_points=100", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "run").iterdir()) == ["figures", "seed0", "seed1"]
    assert not list(out.rglob("*.pt"))
    summary = (out / "summary.md").read_text()
    assert "MNIST" in summary and "seed 1" in summary and "linear (3 epochs)" in summary
    assert len(list((out / "run" / "figures").glob("*.png"))) == len(STUDY_FIGURES)
    assert _cli("study", "--runs", str(home), "--out", str(out), "--epochs", "5", cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_and_names_the_cell(tmp_path):
    import jupytext

    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    path = notebooks / "01_pretrain.ipynb"
    nb = nbformat.read(path, as_version=4)
    where = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(where + 1, nbformat.v4.new_code_cell('raise RuntimeError("planted failure")'))
    nb.cells[where + 1]["id"] = "planted"
    nbformat.write(nb, path)
    jupytext.write(nb, path.with_suffix(".py"), fmt="py:percent")  # a pair in sync: the study runs it
    out = tmp_path / "out"
    proc = _cli("study", "--dataset", "digits", "--out", str(out), "--notebooks", str(notebooks), cwd=tmp_path)
    assert proc.returncode == 1  # a failed notebook, not bad input
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sclib: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "01_pretrain" in errors[0] and "cell" in errors[0] and "planted failure" in errors[0]
    kept = _error_outputs(out / "01_pretrain.ipynb")
    assert kept and kept[0]["ename"] == "RuntimeError" and kept[0]["traceback"]
    assert (out / "01_pretrain.html").exists()
    assert not (out / "02_linear_probe.ipynb").exists() and not (out / "summary.md").exists()
    assert "failed" in (out / "index.html").read_text()


def test_committed_notebooks_are_clean_and_agree_with_their_jupytext_sources():
    for name in paths.ALL_NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "dataset" in tagged[0].source, name
        differs = study.pair_difference(ROOT / "notebooks" / f"{name}.py", ROOT / "notebooks" / f"{name}.ipynb")
        assert differs is None, f"{name}.py and .ipynb differ ({differs}): run jupytext --sync notebooks/{name}.py"


@pytest.mark.slow
def test_the_readme_papermill_commands_run_as_printed(tmp_path):
    """The README's papermill lines work from the repository root (folders exist, run_dir relative)."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    lines = [line.strip() for line in readme.splitlines()]
    commands = [line for line in lines if line.startswith(("papermill ", "mkdir "))]
    assert sum(c.startswith("papermill ") for c in commands) >= 2, "the README shows the notebooks run by papermill"
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "results", "data"))
    bin_dir = Path(sys.executable).parent
    quick = ["-y", "config_overrides: {epochs: 2, batch_size: 128, mlp_hidden: 64, mlp_out: 16}"]
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "papermill":
            extra = quick if "01_pretrain" in command else []
            argv = [str(bin_dir / "papermill"), *argv[1:], "-k", _kernel(), *extra]
        proc = subprocess.run(argv, cwd=checkout, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
    assert (checkout / "runs" / "papermill" / "02_linear_probe.ipynb").exists()


DATA_ROOT_KINDS = {  # how the data folder was named when the command started -> (flag, $SCLIB_DATA)
    "relative --data-root": ("data", None),
    "absolute --data-root": ("{tmp}/data", None),
    "relative $SCLIB_DATA": (None, "data"),
    "absolute $SCLIB_DATA": (None, "{tmp}/data"),
    "neither: ./data": (None, None),
}


def _launch(tmp_path, monkeypatch, kind) -> dict:
    flag, env = (v.format(tmp=tmp_path) if v else v for v in DATA_ROOT_KINDS[kind])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCLIB_DATA", raising=False)
    if env:
        monkeypatch.setenv("SCLIB_DATA", env)
    return {"data_root": flag} if flag else {}


@pytest.mark.parametrize("kind", DATA_ROOT_KINDS)
def test_the_notebooks_read_the_data_folder_the_command_was_started_with(tmp_path, monkeypatch, kind):
    """The notebooks run inside the study folder; ./data there is not the ./data the user meant."""
    seen = {}
    monkeypatch.setattr(study, "_run", lambda sources, values, out, *rest: seen.update(values, out=out) or out)
    given = _launch(tmp_path, monkeypatch, kind)
    study.run_study(Recipe("cifar10", overrides=given), [0], "results/cifar10")
    root = seen["config_overrides"]["data_root"]
    assert (seen["out"] / root).resolve() == (tmp_path / "data").resolve()
    if not Path(root).is_absolute():
        assert root == "../../data"


@pytest.mark.parametrize("kind", DATA_ROOT_KINDS)
def test_sweep_runs_read_the_data_folder_the_command_was_started_with(tmp_path, monkeypatch, kind):
    seen = {}
    monkeypatch.setattr(study, "run_sweep", lambda recipe, *rest, **kw: seen.update(
        root=Path(recipe.overrides["data_root"]).resolve()))
    given = _launch(tmp_path, monkeypatch, kind)
    study.train_sweep(Recipe("cifar10", overrides=given), {"variants": {"short": {"epochs": 1}}}, [0],
                      tmp_path / "results" / "ablations")
    assert seen["root"] == (tmp_path / "data").resolve()  # resolved inside the sweep's folder, where it runs


@pytest.mark.parametrize("kind", DATA_ROOT_KINDS)
def test_the_kernels_default_data_root_is_the_commands_for_runs_that_record_none(tmp_path, monkeypatch, kind):
    """A run trained from the repository root records no data_root; notebooks 02-03 probe and
    evaluate it inside the study folder, where ./data is not the folder the command meant."""
    seen = []
    monkeypatch.setattr(study, "ensure_kernel", lambda: "k")
    monkeypatch.setattr(study, "execute", lambda job, out, kernel, log, step="": seen.append(
        Path(os.environ["SCLIB_DATA"])))
    monkeypatch.setattr(study, "write_summary", lambda out, times: None)
    monkeypatch.setattr(study, "write_index", lambda out, **kw: None)
    given = _launch(tmp_path, monkeypatch, kind)
    before = os.environ.get("SCLIB_DATA")
    study.run_study(Recipe("cifar10", overrides=given), [0], "results/cifar10")
    assert len(seen) == 5 and all(p.is_absolute() and p == (tmp_path / "data").resolve() for p in seen)
    assert os.environ.get("SCLIB_DATA") == before  # restored afterwards


def test_a_bundled_data_set_gets_no_data_folder_unless_one_is_given(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(study, "_run", lambda sources, values, out, *rest: seen.update(values) or out)
    monkeypatch.chdir(tmp_path)
    study.run_study(Recipe("digits"), [0], "results/digits")
    assert "data_root" not in seen["config_overrides"]


@pytest.mark.slow
def test_the_gpu_study_script_packs_runs_that_render_at_home(tmp_path):
    """scripts/gpu_study.sh on a CPU with tiny settings: the tarball holds no checkpoint and renders."""
    import tarfile

    tarball = tmp_path / "runs.tgz"
    env = {**__import__("os").environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_study.sh"), "digits", str(tmp_path / "box"),
                           str(tarball), "--preset", "fast", "--seeds", "0", "1", *TINY_FLAGS, "--device", "cpu"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "home", filter="data")
    assert not [n for n in names if "checkpoints" in n]
    for seed_dir in ("seed0", "seed1"):
        assert any(n.endswith(f"{seed_dir}/arrays.json") for n in names)
        assert any(n.endswith(f"{seed_dir}/samples.png") for n in names)
        assert any(n.endswith(f"{seed_dir}/probe.csv") for n in names)
    home = next((tmp_path / "home").rglob("box"))
    proc = _cli("study", "--runs", str(home), "--out", str(tmp_path / "report"), "--param", "max_points=100",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "seed 1" in (tmp_path / "report" / "summary.md").read_text()


def test_provenance_spans_every_seed_and_every_resume(tmp_path):
    """The report's commit and time span come from all runs, not from seed 0 alone."""
    from sclib.report.summary import load_study, provenance
    from sclib.run.config import make_config

    runs = {0: {"git_commit": "aaa", "git_dirty": False, "started": "2026-01-01T10:00", "finished": "2026-01-01T10:05"},
            1: {"git_commit": "bbb", "git_dirty": False, "started": "2026-01-01T09:00", "finished": "2026-01-01T11:00",
                "resumed": [{"git_commit": "ccc", "git_dirty": True}]}}
    for s, prov in runs.items():
        cfg = make_config("digits", "fast", seed=s, out=str(tmp_path / "run" / f"seed{s}"))
        write_json(tmp_path / "run" / f"seed{s}" / "config.json", {"config": cfg.to_dict(), "provenance": prov})
    pairs = dict(provenance(load_study(tmp_path)))
    assert pairs["code"].endswith("commit aaa (seed 0), bbb (seed 1), ccc (seed 1 resumed) with uncommitted changes")
    assert pairs["trained"] == "2026-01-01T09:00 to 2026-01-01T11:00, resumed 1 time(s)"
    assert pairs["machine"] == "not recorded"  # made before provenance recorded it


def test_the_summary_names_every_cpu_and_thread_count_a_study_trained_with(tmp_path):
    """Results depend on the thread count (reductions split differently): the report must say it."""
    from sclib.report.summary import load_study, provenance
    from sclib.run.config import make_config

    runs = {0: {"cpu_model": "Xeon X", "threads": 1}, 1: {"cpu_model": "Xeon X", "threads": 2,
                                                          "resumed": [{"cpu_model": "EPYC Y", "threads": 1}]}}
    for s, prov in runs.items():
        cfg = make_config("digits", "fast", seed=s, out=str(tmp_path / "run" / f"seed{s}"))
        write_json(tmp_path / "run" / f"seed{s}" / "config.json", {"config": cfg.to_dict(), "provenance": prov})
    assert dict(provenance(load_study(tmp_path)))["machine"] == "EPYC Y, 1 thread; Xeon X, 1 thread; Xeon X, 2 threads"


def test_sweep_runs_record_paths_inside_the_study_not_this_machines(tmp_path, monkeypatch):
    grid = tmp_path / "grid.yaml"
    grid.write_text("variants:\n  base: {}\n")
    monkeypatch.chdir(tmp_path)
    recipe = Recipe("digits", "fast", overrides={"epochs": 1, "keep_epochs": [1], "image_size": 8, "mlp_hidden": 32,
                                                   "mlp_out": 16, "heads": [10], "device": "cpu"})
    sweep_dir = study.train_sweep(recipe, "grid.yaml", [0], (tmp_path / "results" / "x").resolve(), log=lambda m: None)
    record = json.loads((sweep_dir / "base" / "seed0" / "config.json").read_text())
    assert record["config"]["out"] == "sweep/base/seed0"
    assert str(tmp_path) not in json.dumps(record["config"])
    assert Path.cwd() == tmp_path  # the caller's folder is restored


# -- the notebook that runs is the one that was edited ------------------------------------------


def _edit_script(path: Path) -> None:
    path.write_text(path.read_text().replace("# %% [markdown]\n", "# %%\nprint('edited')\n\n# %% [markdown]\n", 1))


def _edit_notebook_source(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    code.source += "\nprint('edited in Jupyter')"
    nbformat.write(nb, path)


def _drop_parameters_tag(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        c.metadata.pop("tags", None)
    nbformat.write(nb, path)


PAIR_EDITS = {
    "the .py edited, not synced": (".py", _edit_script),
    "the .ipynb edited, not synced": (".ipynb", _edit_notebook_source),
    "the .ipynb lost its parameters tag": (".ipynb", _drop_parameters_tag),
}


@pytest.mark.parametrize("edit", PAIR_EDITS)
@pytest.mark.parametrize("name", ["03_clustering_metrics", "01_pretrain"])
def test_a_notebook_pair_that_differs_is_refused_before_anything_runs(tmp_path, edit, name):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    assert study._sources(paths.STUDY_NOTEBOOKS, notebooks)  # in sync as committed
    suffix, change = PAIR_EDITS[edit]
    change(notebooks / f"{name}{suffix}")
    with pytest.raises(ConfigError) as err:
        study._sources(paths.STUDY_NOTEBOOKS, notebooks)
    message = str(err.value)
    assert "\n" not in message and f"{name}.py and {name}.ipynb differ" in message
    assert f"jupytext --sync {notebooks / name}.py" in message
    subprocess.run([str(Path(sys.executable).parent / "jupytext"), "--sync", str(notebooks / f"{name}.py")],
                   check=True, capture_output=True)
    assert study._sources(paths.STUDY_NOTEBOOKS, notebooks)  # synced: accepted again


def test_the_study_command_refuses_an_unsynced_pair_with_exit_2_and_writes_nothing(tmp_path, cli):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    _edit_script(notebooks / "03_clustering_metrics.py")
    result = cli("study", "--dataset", "digits", "--epochs", "1", "--notebooks", notebooks, "--out", tmp_path / "out")
    assert result.code == 2 and len(result.err_lines) == 1 and "jupytext --sync" in result.err_lines[0]
    assert not (tmp_path / "out").exists()


# -- the study's kernel ---------------------------------------------------------------------------


def test_the_fallback_kernel_name_is_the_same_in_every_process():
    code = ("from sclib.report.study import fallback_kernel_name; "
            "print(fallback_kernel_name('sclib', '/opt/py/bin/python'))")
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                            env={**os.environ, "PYTHONHASHSEED": str(salt)}).stdout.strip() for salt in (1, 2, 3)}
    assert len(names) == 1 and re.fullmatch(r"sclib-[0-9a-f]{8}", names.pop())
    assert study.fallback_kernel_name("sclib", "/a/python") != study.fallback_kernel_name("sclib", "/b/python")


def test_a_kernel_name_taken_by_another_interpreter_installs_one_fallback_once(monkeypatch):
    """The issue's example: every study installed yet another sclib-NNNNNNNN kernelspec."""
    import ipykernel.kernelspec
    import jupyter_client.kernelspec as ks

    specs = {"sclib": "/another/env/bin/python"}
    installed = []

    class Manager:
        def get_kernel_spec(self, name):
            if name not in specs:
                raise ks.NoSuchKernel(name)
            return type("Spec", (), {"argv": [specs[name], "-m", "ipykernel_launcher"]})()

    def install(kernel_name, prefix, display_name):
        installed.append(kernel_name)
        specs[kernel_name] = sys.executable

    monkeypatch.setattr(ks, "KernelSpecManager", Manager)
    monkeypatch.setattr(ipykernel.kernelspec, "install", install)
    first, second = study.ensure_kernel(), study.ensure_kernel()
    assert first == second == study.fallback_kernel_name("sclib", sys.executable)
    assert installed == [first] and specs["sclib"] == "/another/env/bin/python"


# -- rendering runs brought home --------------------------------------------------------------------


def _finished_run(folder: Path, epochs: int = 2) -> Path:
    from sclib.run.config import make_config

    cfg = make_config("digits", epochs=epochs, out=str(folder))
    write_json(folder / "config.json", {"config": cfg.to_dict()})
    write_json(folder / "metrics.json", {"epoch": epochs, "acc": 0.5})
    write_json(folder / "eval.json", {"epoch": epochs})
    (folder / "arrays.json").write_bytes(b"stand-in")
    (folder / "samples.png").write_bytes(b"stand-in")
    (folder / "eval_features.npz").write_bytes(b"stand-in")
    (folder / "probe.csv").write_text("epoch,probe,top1,top3\n")
    return folder


RENDER_GAPS = {  # what is gone -> what the message must list, and the command that makes it
    "eval.json": (lambda run: (run / "eval.json").unlink(), "eval.json", "evaluate --run"),
    "arrays.json": (lambda run: (run / "arrays.json").unlink(), "arrays.json", "evaluate --run"),
    "samples.png": (lambda run: (run / "samples.png").unlink(), "samples.png", "evaluate --run"),
    "stale eval.json": (lambda run: write_json(run / "eval.json", {"epoch": 1}), "eval.json of epoch 2",
                        "evaluate --run"),
    "probe.csv": (lambda run: (run / "probe.csv").unlink(), "probe.csv", "probe --run"),
    "not evaluated, not probed": (lambda run: [(run / n).unlink() for n in ("eval.json", "arrays.json", "probe.csv")],
                                  "eval.json, arrays.json, probe.csv", "evaluate --run"),
}


@pytest.mark.parametrize("gap", RENDER_GAPS)
def test_rendering_a_run_without_what_the_report_reads_is_refused_up_front(tmp_path, gap):
    runs = tmp_path / "home"
    for seed_ in (0, 1):
        _finished_run(runs / f"seed{seed_}")
    make_gap, listed, command = RENDER_GAPS[gap]
    make_gap(runs / "seed1")
    with pytest.raises(ConfigError) as err:
        study.render_study(runs, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and f"{runs / 'seed1'} lacks {listed}" in message
    assert f"python -m sclib {command} {runs / 'seed1'}" in message and str(runs / "seed0") not in message
    if listed == "eval.json, arrays.json, probe.csv":
        assert f"python -m sclib probe --run {runs / 'seed1'} --all-kept" in message
    assert not (tmp_path / "out").exists()  # nothing copied, nothing run


@pytest.mark.parametrize("kept", ["eval_features.npz", "embeddings.json", "arrays.npz with features", "neither"])
def test_notebook_04s_run_needs_its_features_or_the_embeddings_drawn_from_them(tmp_path, kept):
    """A clone of a committed study has no features, only the embeddings notebook 04 drew: enough.
    With neither, notebook 04 would fail after 01-03 ran; the study refuses up front instead."""
    runs = tmp_path / "home"
    for seed_ in (0, 1):
        _finished_run(runs / f"seed{seed_}")
    for seed_ in (0, 1):
        (runs / f"seed{seed_}" / "eval_features.npz").unlink()
    np.savez(runs / "seed0" / "arrays.npz", labels=np.zeros(3))  # an earlier version's, without features inside
    if kept == "arrays.npz with features":  # evaluated before the features had a file of their own
        np.savez(runs / "seed0" / "arrays.npz", labels=np.zeros(3), features=np.zeros((3, 2)))
    elif kept != "neither":
        (runs / "seed0" / kept).write_bytes(b"stand-in")
    if kept == "neither":
        with pytest.raises(ConfigError, match=r"seed0 lacks eval_features.npz \(or the embeddings.json notebook 04 "
                                              r"drew from it\); .*python -m sclib evaluate --run .*seed0"):
            study.render_study(runs, tmp_path / "out")
    else:  # gets past the check (to reading the stand-in eval.json, which is not a whole record)
        with pytest.raises(Exception) as err:
            study.render_study(runs, tmp_path / "out")
        assert "eval_features" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_study_runs_on_an_unevaluated_run_exits_2_in_one_line(tmp_path, cli):
    run = _finished_run(tmp_path / "run")
    (run / "eval.json").unlink()
    (run / "probe.csv").unlink()
    result = cli("study", "--runs", run, "--out", tmp_path / "out")
    assert result.code == 2 and len(result.err_lines) == 1
    line = result.err_lines[0]
    assert "lacks eval.json, probe.csv" in line and "python -m sclib evaluate --run" in line


@pytest.mark.parametrize("shutting_down, busy, interrupted", [
    (True, False, False),   # a notebook that ran to its end: nothing to stop, no SIGINT for ipykernel to log
    (True, True, True),     # the study was stopped while a cell ran: the cell is interrupted, as before
    (False, False, True),   # an interrupt asked for outside a shutdown goes through
])
def test_the_notebook_kernel_is_interrupted_at_shutdown_only_while_a_cell_runs(monkeypatch, shutting_down, busy,
                                                                              interrupted):
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    sent = []

    async def record(self):
        sent.append("interrupt")

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", record)
    with study.NotebookKernel() as kernel:
        kernel._sent() if busy else kernel._answered()
        manager = kernel.manager_class()(kernel_name="python3")
        manager.shutting_down = shutting_down
        asyncio.run(manager._async_interrupt_kernel())
        assert manager.transport == "ipc" and manager.ip.startswith(str(kernel.folder))
    assert sent == (["interrupt"] if interrupted else [])


@pytest.mark.slow
@pytest.mark.parametrize("cells", [["for i in range(3):\n    print(i, flush=True)"],
                                   ["import sys\nprint('note', file=sys.stderr)", "y = 2"]],
                         ids=["one cell of flushed lines", "two cells, stderr"])
def test_a_successful_notebook_prints_no_kernel_notice_and_gets_no_sigint(tmp_path, monkeypatch, capfd, cells):
    """A successful study printed ``KeyboardInterrupt caught in kernel`` (the SIGINT jupyter_client
    sends before every shutdown) and ``Kernel is running over TCP without encryption``."""
    import signal

    from jupyter_client.manager import AsyncKernelManager

    signals, original = [], AsyncKernelManager._async_signal_kernel

    async def record(self, signum):
        signals.append(signum)
        await original(self, signum)

    monkeypatch.setattr(AsyncKernelManager, "_async_signal_kernel", record)
    source = tmp_path / "t.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, source)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(tmp_path)
    study.execute(study.NotebookJob("t", source, {}), out, _kernel(), log=lambda m: None)
    err = capfd.readouterr().err
    assert signal.SIGINT not in signals
    assert "KeyboardInterrupt" not in err and "without encryption" not in err and "IPKernelApp" not in err, err
    outputs = nbformat.read(out / "t.ipynb", as_version=4).cells[0].outputs
    assert len(outputs) == 1  # it ran, and its lines are one output (one box on the page), not one each


STEPS = ["01_pretrain", "02_linear_probe", "03_clustering_metrics"]


@pytest.mark.parametrize("last, at, said", [
    (None, "01_pretrain", None),  # a first run cannot know
    ({"01_pretrain": 900, "02_linear_probe": 30, "03_clustering_metrics": 50}, "01_pretrain",
     "the report steps left after the training (02_linear_probe, 03_clustering_metrics) took 80 s"),
    ({"01_pretrain": 900, "02_linear_probe": 300, "03_clustering_metrics": 60}, "02_linear_probe",
     "the report steps left (02_linear_probe, 03_clustering_metrics) took 6 min"),
    ({"02_linear_probe": 30}, "02_linear_probe", None),  # 03 was never timed: no half estimate
    ("not json", "02_linear_probe", None),  # a damaged record costs only the estimate
], ids=["first run", "rerun before training", "rerun mid-report", "one step untimed", "damaged record"])
def test_a_study_rerun_says_what_the_steps_left_took_the_last_time(tmp_path, last, at, said):
    path = tmp_path / study.STEP_TIMES
    if isinstance(last, dict):
        write_json(path, last)
    elif last is not None:
        path.write_text(last)
    steps = study.StepTimes(path, STEPS)
    line = steps.remaining(at)
    assert line == (None if said is None else f"{said} the last time this study ran here")
    steps.record(at, 12.0)
    assert json.loads(path.read_text())[at] == 12.0  # recorded for the next run


def test_the_study_numbers_its_steps(tmp_path, monkeypatch):
    lines, names = [], []
    monkeypatch.setattr(study, "ensure_kernel", lambda: "k")
    monkeypatch.setattr(study, "execute", lambda job, out, kernel, log, step="": (names.append(job.name),
                                                                                   log(f"study: {step}{job.name}")))
    monkeypatch.setattr(study, "write_summary", lambda out, times: None)
    monkeypatch.setattr(study, "write_index", lambda out, **kw: None)
    monkeypatch.setattr(study, "plan", lambda sources, values: [study.NotebookJob(n, Path(n), {}) for n in STEPS])
    study._run({}, {}, tmp_path, None, lines.append, "a test")
    assert [line for line in lines if "[" in line] == [f"study: [{k}/3] {n}" for k, n in enumerate(STEPS, start=1)]
    study._run({}, {}, tmp_path, None, lines.append, "a test")  # the second run knows what the first took
    assert any("report steps left after the training" in line for line in lines)


def _missing_run(path):
    paths.run_folders(path)


def _missing_config(path):
    paths.open_run(path)


def _damaged_eval(path):
    path.mkdir(parents=True)
    (path / "eval.json").write_text("{cut")
    records.read_evaluation(paths.RunPaths(path), 0)


def _unevaluated(path):
    path.mkdir(parents=True)
    study.check_rendered_files([path], [types.SimpleNamespace(epochs=1)])


HINTS = {"no run folder": _missing_run, "no config.json": _missing_config, "damaged eval.json": _damaged_eval,
         "study --runs of an unevaluated run": _unevaluated}


@pytest.mark.parametrize("where", ["notebooks", "root", "outside"])
@pytest.mark.parametrize("kind", HINTS)
def test_every_printed_hint_names_its_folder_as_seen_from_the_repository_root(tmp_path, monkeypatch, kind, where):
    """A notebook (run in notebooks/) printed ``pretrain --out ../runs/lab/digits``: pasted at the
    repository root, where the README's commands run, it wrote outside the repository."""

    repo = tmp_path / "repo"
    (repo / "sclib").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    (repo / "pyproject.toml").write_text("")
    monkeypatch.setattr(files, "repository_root", lambda: repo.resolve())
    cwd, given = {"notebooks": (repo / "notebooks", "../runs/lab/digits"), "root": (repo, "runs/lab/digits"),
                  "outside": (tmp_path, "elsewhere/digits")}[where]
    monkeypatch.chdir(cwd)
    with pytest.raises((FileNotFoundError, ConfigError, files.UnreadableFileError)) as err:
        HINTS[kind](Path(given))
    message = str(err.value)
    shown = re.search(r"python -m sclib \w+ --(?:out|run) (\S+?)`?(?:\s|$)", message).group(1)
    assert (Path(shown) if where == "outside" else repo / shown).resolve() == (cwd / given).resolve(), message
    assert Path(shown).is_absolute() == (where == "outside")
    assert ("(from the repository root)" in message) == (where == "notebooks"), message


def test_the_stylesheet_wraps_long_notes_and_output_lines():
    """A long --note ran off the notebook page: output blocks, notes and warnings wrap."""
    from sclib.report import summary

    rule = re.search(r"([^{}\n]+)\{white-space:pre-wrap;overflow-wrap:anywhere\}", summary.CSS)
    assert rule and {".output_area pre", ".note", ".warn"} <= set(rule.group(1).split(","))


@pytest.mark.parametrize("overrides, said", [
    ({"epoch": 1}, r"config_overrides: unknown parameter\(s\) epoch; known: dataset"),
    ({"epochs": "abc"}, r"parameter epochs got 'abc', which is not a valid int"),
    ({"heads": [10, "x"]}, r"parameter heads got \[10, 'x'\], which is not a valid list"),
    ({"amp": "maybe"}, r"parameter amp got 'maybe', which is not a valid bool"),
])
def test_a_notebooks_training_parameters_are_checked_against_the_configs_own_types(overrides, said):
    """config_overrides reach the Config only inside notebook 01's training; the check at the top
    of every notebook already holds them to the Config's field names and types."""
    with pytest.raises(ConfigError, match=f"^{said}"):
        report.check_parameters(config_overrides=overrides)
    report.check_parameters(config_overrides={"epochs": "3", "heads": [10, 20], "amp": False})  # typed as a recipe
