"""Faults real users hit, round 2 (issue 29): each case is one of a kind, and each kind has several.

1. A folder's results come from the config it records: a sweep variant edited under its old name,
   a study folder holding other seeds or another recipe, two writers on one run folder, a
   checkpoint of another run, a relative data folder -> refused in one line (exit 2), or read
   from the listed seeds only, or the same data found from any working folder.
2. Any class name renders: `$`, `_`, `^`, backslashes, `%`, Latin-1 bytes, in every figure and
   table -> saved, drawn as literal text, bytes shown escaped.
3. Seeds -1, 2**32, 2**40 on every command and as notebook parameters -> refused up front.
4. Damaged files a command reads (history/probe cut, eval/metrics/study/config cut, arrays.json and
   samples.png cut or mismatched, checkpoints without keys) -> one line naming the file and what to do.
5. Paths and values (--out a file / under a file / read-only / too long; --config, --grid,
   --readme not text; views too small; a decompression bomb) -> one line, exit 2, before work.
6. User text (`|`, newlines, HTML, Markdown marks in --note and names) -> escaped for the format
   it lands in (Markdown, HTML, CSV).
7. SIGINT, SIGTERM, SIGHUP -> the Ctrl-C line, exit 130; undeclared papermill parameters ->
   refused, naming the declared ones.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sclib.report import ablations, study, summary, sweep, tables
from sclib.report import notebook as report
from sclib.run import checkpoint, paths, records
from sclib.run.config import ConfigError, Recipe, load_config, make_config
from sclib.run.files import (
    LOCK_NAME,
    FolderBusyError,
    FolderLock,
    UnreadableFileError,
    display_text,
    read_csv_rows,
    write_csv,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = "sclib: interrupted; rerun the same command to resume from the last checkpoint"


def one_error_line(result, *names: str) -> str:
    """The command ended in one ``sclib: error:`` line on stderr, exit 2, naming ``names``."""
    assert result.code == 2, result
    assert len(result.err_lines) == 1, result.err_lines
    line = result.err_lines[0]
    assert line.startswith("sclib: error:"), line
    for name in names:
        assert str(name) in line, f"{name!r} not in {line!r}"
    return line


def tiny_run(tiny_args, out, *extra) -> list[str]:
    return ["pretrain", *tiny_args, "--epochs", "2", "--keep-epochs", "1", "2", "--no-progress", "--out", str(out),
            *extra]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def group(tmp_path_factory, tiny_args) -> Path:
    """Seeds 0 and 1 of a tiny digits recipe, finished, evaluated and probed (as a study reads them)."""
    from sclib.cli import main

    box = tmp_path_factory.mktemp("group") / "G"
    for argv in (tiny_run(tiny_args, box, "--seeds", "0", "1"), ["evaluate", "--run", box, "--device", "cpu"],
                 ["probe", "--run", box, "--all-kept", "--epochs", "2", "--device", "cpu"]):
        assert main([str(a) for a in argv]) == 0
    return box


@pytest.fixture
def group_copy(group, tmp_path) -> Path:
    target = tmp_path / "G"
    shutil.copytree(group, target, ignore=shutil.ignore_patterns(LOCK_NAME))
    return target


# == 1. A folder's results must come from the config it records =================================

# -- the sweep: a variant's values edited under the same name

SWEEP_BASE = {"epochs": 1, "keep_epochs": [1], "image_size": 8, "mlp_hidden": 32, "mlp_out": 16, "heads": [10],
              "batch_size": 128, "device": "cpu"}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    sweep.run_sweep(Recipe("digits", overrides=SWEEP_BASE), {"variants": {"tau": {"row_tau": 0.07}}}, out,
                    log=lambda m: None)
    return out


@pytest.mark.parametrize("edit", [{"row_tau": 0.5}, {"lr": 0.05}, {"heads": [10, 20]}],
                         ids=["row_tau", "lr", "heads"])
def test_a_sweep_variant_edited_under_its_old_name_is_refused_not_skipped(finished_sweep, tmp_path, edit):
    out = tmp_path / "sweep"
    shutil.copytree(finished_sweep, out)
    before = (out / "sweep.json").read_bytes()
    with pytest.raises(ConfigError) as err:
        sweep.run_sweep(Recipe("digits", overrides=SWEEP_BASE), {"variants": {"tau": {"row_tau": 0.07, **edit}}},
                        out, log=lambda m: None)
    message = str(err.value)
    assert "\n" not in message and "variant 'tau'" in message and next(iter(edit)) in message
    assert "change its name" in message
    assert (out / "sweep.json").read_bytes() == before  # the grid it ran is still what sweep.json says


@pytest.mark.parametrize("field, value", [("row_tau", 0.5), ("epochs", 7)])
def test_a_sweep_table_refuses_a_folder_whose_run_is_not_what_sweep_json_says(finished_sweep, tmp_path, field,
                                                                               value):
    out = tmp_path / "sweep"
    shutil.copytree(finished_sweep, out)
    spec = json.loads((out / "sweep.json").read_text())
    spec["variants"][0]["config"][field] = value
    write_json(out / "sweep.json", spec)
    with pytest.raises(ConfigError, match=f"{field} .* in the run, {value!r} in the grid"):
        ablations.ablation_table(out)


# -- the study: its folder holding seeds or a recipe it does not list

@pytest.fixture
def no_notebooks(monkeypatch):
    """study._run replaced by a stand-in: what these tests check happens before any notebook."""
    seen = []
    monkeypatch.setattr(study, "_run", lambda sources, values, out, *rest: seen.append(values) or out)
    return seen


def test_rendering_fewer_seeds_into_a_study_folder_is_refused(group, tmp_path, no_notebooks):
    out = tmp_path / "S"
    study.render_study(group, out)
    assert sorted(p.name for p in (out / "run").iterdir()) == ["seed0", "seed1"]
    with pytest.raises(ConfigError) as err:
        study.render_study(group / "seed0", out)  # seed 0 only: seed 1 would stay in the mean ± std
    assert "seed(s) 1" in str(err.value) and "another --out" in str(err.value)


def test_rendering_another_recipe_over_a_seed_folder_is_refused(group, tmp_path, no_notebooks):
    out = tmp_path / "S"
    study.render_study(group / "seed0", out)
    other = tmp_path / "B" / "seed0"
    shutil.copytree(group / "seed0", other)
    record = json.loads((other / "config.json").read_text())
    record["config"]["lr"] = 0.05
    write_json(other / "config.json", record)
    before = (out / "run" / "seed0" / "config.json").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds another run \(lr 0\.4 there, 0\.05 in"):
        study.render_study(other, out)
    assert (out / "run" / "seed0" / "config.json").read_bytes() == before


@pytest.mark.parametrize("seeds, overrides, refused", [
    ([0], {}, "seed(s) 1"),  # the issue's `study --seeds 0` after seeds 0 and 1
    ([0, 1], {"lr": 0.05}, "different config"),  # another recipe into the same seed folders
    ([0, 1, 2], {}, None),  # more seeds than before: the old ones are part of it
])
def test_training_a_study_into_a_folder_of_other_seeds_or_another_recipe(group_copy, tmp_path, no_notebooks,
                                                                          tiny_args, seeds, overrides, refused):
    out = tmp_path / "S"
    shutil.copytree(group_copy, out / "run")
    base = {"batch_size": 128, "image_size": 8, "mlp_hidden": 64, "mlp_out": 16, "heads": [10, 20],
            "device": "cpu", "epochs": 2, "keep_epochs": [1, 2]}  # the group's recipe (tiny_args)
    recipe = Recipe("digits", overrides={**base, **overrides})
    if refused is None:
        study.run_study(recipe, seeds, out)
        assert no_notebooks[-1]["seeds"] == seeds
        return
    with pytest.raises(ConfigError) as err:
        study.run_study(recipe, seeds, out)
    assert refused in str(err.value) and "\n" not in str(err.value)
    assert not no_notebooks


@pytest.mark.parametrize("listed", [[0], [1], [0, 1]])
def test_the_summary_reads_only_the_seeds_study_json_lists(group_copy, tmp_path, listed):
    out = tmp_path / "S"
    shutil.copytree(group_copy, out / "run")
    write_json(out / "study.json", {"dataset": "digits", "run_dir": "run", "seeds": listed})
    found = summary.load_study(out)
    assert [cfg.seed for cfg, _ in found.runs] == listed and [e.seed for e in found.reports] == listed
    text = summary.write_summary(out).read_text()
    assert f"- **seeds**: {', '.join(map(str, listed))}\n" in text
    assert ("mean ± std" in text) == (len(listed) > 1)


# -- two writers on one run folder

def _hold_lock(folder: Path) -> subprocess.Popen:
    """A separate process that takes the folder's lock and sleeps until killed."""
    code = ("import sys, time; from sclib.run.files import FolderLock\n"
            f"with FolderLock({str(folder)!r}):\n    print('held', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("second", [(), ("--lr", "0.05")], ids=["same parameters", "other lr"])
@pytest.mark.parametrize("holder", ["this process", "another process"])
def test_a_second_writer_on_a_run_folder_refuses_naming_the_holder(cli, tiny_args, tmp_path, holder, second):
    run = tmp_path / "R"
    proc = None
    if holder == "this process":
        lock = FolderLock(run).__enter__()
        pid = os.getpid()
    else:
        proc = _hold_lock(run)
        pid = proc.pid
    try:
        result = cli(*tiny_run(tiny_args, run, *second))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        else:
            lock.__exit__(None, None, None)
    one_error_line(result, run, f"pid {pid} on host {socket.gethostname()}", "in use")
    assert not (run / "config.json").exists() and not (run / "checkpoints").exists()


@pytest.mark.parametrize("signal_", [signal.SIGKILL, signal.SIGTERM])
def test_a_lock_left_by_a_dead_process_does_not_block(cli, tiny_args, tmp_path, signal_):
    run = tmp_path / "R"
    proc = _hold_lock(run)
    proc.send_signal(signal_)
    proc.wait()
    assert "pid" in (run / LOCK_NAME).read_text()  # the file is still there, the lock is not
    result = cli(*tiny_run(tiny_args, run))
    assert result.code == 0, result.err_lines
    assert (run / "metrics.json").exists()
    with FolderLock(run):  # and it is free again once the run is done
        pass


def test_the_lock_refuses_in_process_too_and_says_who():
    import tempfile

    with tempfile.TemporaryDirectory() as folder, FolderLock(folder):
        with pytest.raises(FolderBusyError, match=f"pid {os.getpid()} on host"):
            FolderLock(folder).__enter__()


# -- one checkpoint, one run

@pytest.mark.parametrize("command", ["evaluate", "probe"])
@pytest.mark.parametrize("target", ["the group folder", "another seed's folder"])
def test_a_checkpoint_is_used_only_for_the_run_that_wrote_it(cli, group_copy, command, target):
    ckpt = group_copy / "seed0" / "checkpoints" / "last.pt"
    run = group_copy if target == "the group folder" else group_copy / "seed1"
    before = {p: p.read_bytes() for p in (group_copy / "seed1").glob("*.*")}
    extra = ["--epochs", "2"] if command == "probe" else []
    result = cli(command, "--run", run, "--checkpoint", ckpt, "--device", "cpu", *extra)
    line = one_error_line(result, "--run")
    assert ("holds 2 seed runs" in line) if run == group_copy else ("another run" in line and "seed 1" in line)
    assert {p: p.read_bytes() for p in before} == before  # seed 1's eval.json, arrays.json, probe.csv untouched


def test_a_checkpoint_of_the_run_itself_is_still_taken(cli, group_copy):
    run = group_copy / "seed1"
    result = cli("evaluate", "--run", run, "--checkpoint", run / "checkpoints" / "epoch_0001.pt", "--device", "cpu")
    assert result.code == 0, result.err_lines
    assert json.loads((run / "eval.json").read_text())["epoch"] == 1


# -- relative data folders: recorded so that every command finds the same data

@pytest.mark.parametrize("evaluate_from", ["the same folder", "the parent folder", "the run folder itself",
                                           "a folder with a decoy data/"])
def test_a_relative_data_root_is_found_from_any_folder(cli, tiny_args, tmp_path, monkeypatch, make_image_folder,
                                                       evaluate_from):
    home = tmp_path / "home"
    make_image_folder(home / "mydata", classes=3)
    monkeypatch.chdir(home)
    args = [a for a in tiny_args if a != "digits"]
    args[args.index("--dataset") + 1: args.index("--dataset") + 1] = ["imagefolder"]
    result = cli("pretrain", *args, "--data-root", "mydata", "--epochs", "1", "--keep-epochs", "1", "--no-progress",
                 "--out", "studies/S/run")
    assert result.code == 0, result.err_lines
    run = home / "studies" / "S" / "run"
    assert json.loads((run / "config.json").read_text())["config"]["data_root"] == "../../../mydata"
    where = {"the same folder": home, "the parent folder": tmp_path, "the run folder itself": run,
             "a folder with a decoy data/": tmp_path / "decoy"}[evaluate_from]
    if evaluate_from.startswith("a folder with a decoy"):
        make_image_folder(where / "mydata", classes=2)  # where the path as typed would point from here
    where.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(where)
    result = cli("evaluate", "--run", os.path.relpath(run, where), "--device", "cpu")
    assert result.code == 0, result.err_lines
    record = json.loads((run / "eval.json").read_text())
    assert record["classes"] == ["class0", "class1", "class2"] and record["eval_images"] == 6
    assert load_config(run / "config.json").data_root == str((home / "mydata").resolve())


# == 2. Any class name a file system can hold renders ============================================

NAMES = {
    "dollars": ["price_$0_$10", "price_$10_$20", "price_$20_$30"],
    "TeX commands": [r"\frac{a}{b}", r"$\alpha$", "x^2_y"],
    "percent and braces": ["50%", "{x}", "a_{b}"],
    "Latin-1 bytes": [os.fsdecode(b"caf\xe9"), os.fsdecode(b"na\xefve"), "plain"],
}


def _figures(names: list[str]):
    from sclib.report import plots

    n = len(names)
    rng = np.random.default_rng(0)
    yield "confusion", plots.confusion_matrix_plot(np.arange(n * n).reshape(n, n), names)
    yield "embedding", plots.embedding_scatter(rng.normal(size=(12, 2)), np.arange(12) % n, names)
    yield "embedding by name", plots.embedding_scatter(rng.normal(size=(12, 2)), [names[i % n] for i in range(12)])
    images = rng.integers(0, 255, (4, 1, 8, 8), dtype=np.uint8)
    yield "cluster grid", plots.cluster_grid(images, [{"cluster": 0, "indices": [0, 1], "label": names[0],
                                                       "purity": 0.5}])
    import pandas as pd

    table = pd.DataFrame({"variant": names, **{m: [0.5] * n for m in ("nmi", "ami", "ari", "acc")}})
    yield "ablation bars", plots.ablation_bars(table, baseline=names[0])
    yield "ablation heatmap", plots.ablation_heatmap(table, baseline=names[0])


@pytest.mark.parametrize("kind", NAMES)
def test_every_figure_draws_any_class_name_as_literal_text(tmp_path, kind):
    from matplotlib.text import Text

    from sclib.report.plots import save_figure

    names = NAMES[kind]
    shown = [display_text(n) for n in names]
    for what, fig in _figures(names):
        (png,) = save_figure(fig, tmp_path, what.replace(" ", "_"))  # drawn: mathtext or the font would raise
        assert png.stat().st_size > 0, what
        texts = [t.get_text() for t in fig.findobj(Text)]
        assert all(not t.get_parse_math() for t in fig.findobj(Text)), what
        assert any(s in t for s in shown for t in texts), (what, texts)
        assert all(t == display_text(t) for t in texts), what  # nothing left a font cannot draw


@pytest.mark.parametrize("kind", NAMES)
def test_every_table_shows_any_class_name(kind):
    names = NAMES[kind]
    record = {"epoch": 1, "evaluated_head": 0, "heads": [], "kmeans_features": {}, "kmeans_pixels": {},
              "classes": names}
    evaluation = records.Evaluation.from_json(json.loads(json.dumps(record)), seed=0)
    assert evaluation.classes == tuple(display_text(n) for n in names)
    table = tables.Table(["class", "n"], [[n, "1"] for n in names])
    markdown, page = table.markdown(), table.html()
    markdown.encode("utf-8"), page.encode("utf-8")  # writable as UTF-8 (a lone surrogate is not)
    assert len(markdown.strip().splitlines()) == 2 + len(names)
    if kind == "Latin-1 bytes":
        assert "caf\\\\xe9" in markdown and "caf\\xe9" in page


# == 3. Seeds ===================================================================================

BAD_SEEDS = ["-1", str(2**32), str(2**40)]


@pytest.mark.parametrize("seed", BAD_SEEDS)
@pytest.mark.parametrize("command", ["pretrain", "study", "sweep"])
def test_a_seed_outside_0_to_2_32_is_refused_up_front_by_every_command(cli, tiny_args, tmp_path, seed, command):
    extra = ["--grid", str(ROOT / "ablations.yaml")] if command == "sweep" else []
    result = cli(command, *tiny_args, "--epochs", "1", "--out", tmp_path / "G", "--seeds", "0", seed, *extra)
    one_error_line(result, "--seeds", seed, "2**32")
    assert not (tmp_path / "G").exists()


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_a_config_seed_outside_0_to_2_32_is_refused(tmp_path, seed):
    with pytest.raises(ConfigError, match=r"seed must lie in \[0, 2\*\*32\)"):
        make_config("digits", seed=seed, out=str(tmp_path))
    for name, value in (("seeds", [0, seed]), ("seed", seed), ("show_seed", seed)):
        with pytest.raises(ConfigError, match=f"parameter {name} must be"):
            report.check_parameters(**{name: value})


def test_why_seeds_stop_at_2_32_and_every_seed_below_has_its_own_folder():
    torch.manual_seed(2**32)
    high = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(high, torch.rand(4))  # PyTorch's CPU generator keeps 32 bits: seed 2**32 is seed 0
    for seed in (0, 1, 2**31, 2**32 - 1):
        assert paths.folder_seed(paths.seed_folder("G", seed)) == seed


# == 4. Files a run reads, damaged ==============================================================

def _cut(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _cut_history_at_a_line_end(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _drop_key(name: str, key: str):
    def drop(path: Path) -> None:
        record = json.loads(path.read_text())
        record.pop(key)
        path.write_text(json.dumps(record))
    return drop


def _png(width: int, height: int) -> bytes:
    """A valid PNG of another size than any sample mosaic."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


DAMAGE = {  # id: (file in seed1, how, words the line must hold besides the file's path)
    "history.csv cut mid-line": ("history.csv", _cut, "cut in the middle of a line"),
    "history.csv cut at a line end": ("history.csv", _cut_history_at_a_line_end, "not epochs 1 to 2"),
    "probe.csv cut": ("probe.csv", _cut, "damaged"),
    "eval.json cut": ("eval.json", _cut, "not valid JSON"),
    "eval.json without heads": ("eval.json", _drop_key("eval", "heads"), "lacks heads"),
    "metrics.json cut": ("metrics.json", _cut, "not valid JSON"),
    "metrics.json without acc": ("metrics.json", _drop_key("metrics", "acc"), "lacks acc"),
    "arrays.json cut": ("arrays.json", _cut, "not valid JSON"),
    "arrays.json without assigned": ("arrays.json", _drop_key("arrays", "assigned"), "lacks assigned"),
    "samples.png cut": ("samples.png", _cut, "damaged"),
    "samples.png of another size": ("samples.png", lambda p: p.write_bytes(_png(8, 8)), "not the mosaic of"),
    "config.json holding config null": ("config.json", lambda p: p.write_text('{"config": null}'), "null"),
    "config.json cut": ("config.json", _cut, "not valid JSON"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_study_runs_names_a_damaged_run_file_in_one_line(cli, group_copy, tmp_path, case):
    name, damage, words = DAMAGE[case]
    damage(group_copy / "seed1" / name)
    result = cli("study", "--runs", group_copy, "--out", tmp_path / "S")
    one_error_line(result, group_copy / "seed1" / name, words)
    assert not (tmp_path / "S").exists()


@pytest.mark.parametrize("case", ["history.csv cut mid-line", "history.csv cut at a line end", "probe.csv cut",
                                  "eval.json cut", "config.json holding config null"])
def test_the_summary_names_a_damaged_run_file_instead_of_a_wrong_number(group_copy, tmp_path, case):
    name, damage, words = DAMAGE[case]
    out = tmp_path / "S"
    shutil.copytree(group_copy, out / "run")
    damage(out / "run" / "seed1" / name)
    with pytest.raises((UnreadableFileError, ConfigError)) as err:
        summary.write_summary(out)
    assert str(out / "run" / "seed1" / name) in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("damage", [_cut, lambda p: p.write_text("[1, 2]"), lambda p: p.write_text("")],
                         ids=["cut", "a list", "empty"])
@pytest.mark.parametrize("name", ["study.json", "run/seed0/eval.json"])
def test_front_names_a_damaged_study_file(cli, group_copy, tmp_path, damage, name):
    results = tmp_path / "results"
    shutil.copytree(group_copy, results / "digits" / "run")
    write_json(results / "digits" / "study.json", {"dataset": "digits", "run_dir": "run", "seeds": [0, 1]})
    damage(results / "digits" / name)
    result = cli("front", "--results", results, "--readme", tmp_path / "README.md")
    one_error_line(result, results / "digits" / name, "damaged")
    assert not (results / "index.html").exists()


@pytest.mark.parametrize("missing", ["history", "epoch", "optimizer", "model"])
def test_a_checkpoint_without_what_resuming_needs_is_named_in_one_line(cli, tiny_args, group_copy, missing):
    run = group_copy / "seed0"
    (run / "metrics.json").unlink()  # unfinished: a rerun resumes
    for path in run.glob("checkpoints/*.pt"):
        state = checkpoint.load(path)
        state.pop(missing)
        checkpoint.save(path, state)
    result = cli(*tiny_run(tiny_args, run, "--seed", "0"))
    one_error_line(result, run / "checkpoints" / "last.pt", f"lacks {missing}", "resuming")
    assert "does not fit" not in result.err_lines[0]


@pytest.mark.parametrize("missing", ["epoch", "model"])
def test_a_checkpoint_without_its_weights_or_epoch_is_named_when_evaluated(cli, group_copy, missing):
    ckpt = group_copy / "seed0" / "checkpoints" / "epoch_0001.pt"
    state = checkpoint.load(ckpt)
    state.pop(missing)
    checkpoint.save(ckpt, state)
    result = cli("evaluate", "--run", group_copy / "seed0", "--checkpoint", ckpt, "--device", "cpu")
    one_error_line(result, ckpt, f"lacks {missing}")


@pytest.mark.parametrize("rows", [
    [{"a": "1", "b": "x, y"}], [{"a": 'say "hi"', "b": "two\nlines"}], [{"a": "|", "b": ""}, {"a": "2", "b": "3"}]],
    ids=["a comma", "quotes and a newline", "a pipe and an empty cell"])
def test_csv_files_round_trip_any_text_and_a_cut_one_is_named(tmp_path, rows):
    path = write_csv(tmp_path / "t.csv", rows)
    assert read_csv_rows(path, ("a", "b")) == rows
    _cut(path, 0.8)
    with pytest.raises(UnreadableFileError, match=r"t\.csv is damaged"):
        read_csv_rows(path)


# == 5. Paths and values checked up front =======================================================

LONG = "x" * 256


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "taken"
    path.write_text("a file\n")
    return path


OUT_CASES = {  # id: (make --out from tmp_path, words)
    "--out an existing file": (_a_file, "is a file, not a folder"),
    "--out under a file": (lambda t: _a_file(t) / "S", "cannot create"),
    "--out a name of 256 bytes": (lambda t: t / LONG, "256 bytes"),
}


@pytest.mark.parametrize("case", OUT_CASES)
@pytest.mark.parametrize("command", ["study --runs", "sweep", "pretrain"])
def test_an_unusable_out_folder_is_one_line(cli, tiny_args, group, tmp_path, command, case):
    make, words = OUT_CASES[case]
    out = make(tmp_path)
    if command == "study --runs":
        argv = ["study", "--runs", group, "--out", out]
    elif command == "sweep":
        argv = ["sweep", *tiny_args, "--epochs", "1", "--grid", ROOT / "ablations.yaml", "--out", out]
    else:
        argv = ["pretrain", *tiny_args, "--epochs", "1", "--out", out]
    one_error_line(cli(*argv), words)


@pytest.mark.parametrize("command", ["study --runs", "sweep"])
def test_a_read_only_out_folder_is_one_line(cli, tiny_args, group, tmp_path, monkeypatch, command):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.is_relative_to(tmp_path / "ro"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "ro" / "S"
    argv = (["study", "--runs", group, "--out", out] if command == "study --runs" else
            ["sweep", *tiny_args, "--epochs", "1", "--grid", ROOT / "ablations.yaml", "--out", out])
    one_error_line(cli(*argv), out, "Read-only file system")


@pytest.mark.parametrize("command", ["evaluate", "probe", "study --runs"])
def test_a_run_path_with_a_name_too_long_is_one_line(cli, tmp_path, command):
    run = tmp_path / LONG / "run"
    argv = ["study", "--runs", run, "--out", tmp_path / "S"] if command == "study --runs" else [command, "--run", run]
    one_error_line(cli(*argv), "256 bytes", "shorter")


def _checkpoint_file(folder: Path) -> Path:
    path = folder / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.zeros(3)}, "epoch": 1})
    return path


def _a_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


NOT_TEXT = {  # id: (make the path inside a folder, words)
    "a folder": (_a_folder, "is a folder"),
    "a checkpoint": (_checkpoint_file, "not a UTF-8 text file"),
    "missing": (lambda folder: folder / "nothing.yaml", "does not exist"),
}


@pytest.mark.parametrize("case", NOT_TEXT)
@pytest.mark.parametrize("flag", ["pretrain --config", "sweep --grid", "front --readme"])
def test_a_file_flag_naming_something_that_is_not_its_text_is_one_line(cli, tiny_args, group, tmp_path, flag, case):
    make, words = NOT_TEXT[case]
    path = make(tmp_path / "given")
    if flag == "pretrain --config":
        argv = ["pretrain", "--config", path, "--out", tmp_path / "R"]
    elif flag == "sweep --grid":
        argv = ["sweep", *tiny_args, "--grid", path, "--out", tmp_path / "S"]
    else:
        results = tmp_path / "results"
        shutil.copytree(group, results / "digits" / "run")
        write_json(results / "digits" / "study.json", {"dataset": "digits", "run_dir": "run", "seeds": [0, 1]})
        argv = ["front", "--results", results, "--readme", path]
    one_error_line(cli(*argv), path, words)


@pytest.mark.parametrize("flags", [["--image-size", "1"], ["--image-size", "0"], ["--local-size", "1"],
                                   ["--local-size", "0", "--local-crops", "2"]])
def test_a_view_too_small_to_augment_is_refused_by_validation(cli, tiny_args, tmp_path, flags):
    result = cli(*tiny_run(tiny_args, tmp_path / "R"), *flags)
    one_error_line(result, flags[0].lstrip("-").replace("-", "_"), "invalid configuration")
    assert not (tmp_path / "R").exists()


def test_the_smallest_accepted_view_trains(cli, tiny_args, tmp_path):
    # fp32: bf16 on 2 px views can overflow to a non-finite loss (which ends in its own one line)
    result = cli(*tiny_run(tiny_args, tmp_path / "R"), "--image-size", "2", "--no-amp")
    assert result.code == 0, result.err_lines


@pytest.mark.parametrize("decode", [True, False], ids=["loading", "reading headers"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_a_decompression_bomb_is_named_in_one_line(tmp_path, monkeypatch, make_image_folder, fmt, decode):
    from PIL import Image

    from sclib.data import DataError, load_dataset, summarize_image_folder

    root = make_image_folder(tmp_path / "images", classes=2)
    bomb = root / "train" / "class1" / f"huge.{fmt.lower()}"
    Image.new("L", (40, 40), 128).save(bomb, fmt)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 28 * 28)  # 40 x 40 is over twice that: Pillow's error
    with pytest.raises(DataError) as err:
        load_dataset("imagefolder", root, image_size=8) if decode else summarize_image_folder(root)
    message = str(err.value)
    assert "\n" not in message and str(bomb) in message and "decompression bomb" in message


# == 6. What users type into generated text =====================================================

NOTES = {
    "a newline": "line one\nline two",
    "a pipe": "a | b",
    "HTML": "<b>bold</b> <script>alert(1)</script>",
    "Markdown marks": "*not bold* _not em_ [not a link](x) `not code` $not math$",
}


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ")]


@pytest.mark.parametrize("note", NOTES.values(), ids=NOTES.keys())
def test_a_note_is_escaped_for_every_format_it_lands_in(group_copy, tmp_path, note):
    import html as html_module

    from sclib.report import front

    results = tmp_path / "results"
    out = results / "digits"
    shutil.copytree(group_copy, out / "run")
    write_json(out / "study.json", {"dataset": "digits", "run_dir": "run", "seeds": [0, 1], "note": note})
    front.write_front(results, readme=None)
    summary_md = summary.write_summary(out).read_text()
    index = summary.write_index(out).read_text()
    readme = (results / "README.md").read_text()
    note_line = [line for line in summary_md.splitlines() if line.startswith("- **note**")]
    assert len(note_line) == 1 and not re.search(r"(?<!\\)[<*`|$\[]", note_line[0].split(": ", 1)[1])
    assert "\n" not in note or "line one line two" in note_line[0]
    ours = [row for row in _table_rows(readme) if row.startswith("| digits")]
    assert len(ours) == 1, readme  # one row, whatever the note holds
    cells = ours[0].replace("\\|", "").split("|")
    assert len(cells) == len(front.COLUMNS) + 2
    assert "<b>" not in readme and "<script>" not in readme
    for page in (index, (results / "index.html").read_text()):
        assert "<script>" not in page and html_module.escape(note.splitlines()[0]) in page


@pytest.mark.parametrize("text, markdown", [
    ("a|b", "a\\|b"), ("x\ny", "x y"), ("<i>", "\\<i\\>"), ("*a*", "\\*a\\*"),
    ("OMP_NUM_THREADS=1", "OMP_NUM_THREADS=1"),
    ("_a_", "\\_a\\_"), ("$5", "\\$5"), ("[a](b)", "\\[a\\](b)"), ("a & b", "a & b"), ("&amp;", "\\&amp;"),
])
def test_markdown_text_escapes_what_markdown_would_act_on(text, markdown):
    assert tables.markdown_text(text) == markdown


# == 7. Signals and notebook parameters =========================================================

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_during_training_ends_in_the_ctrl_c_line(sclib_command, sclib_env, tiny_args, tmp_path, sig):
    run = tmp_path / "R"
    argv = sclib_command("pretrain", *tiny_args, "--epochs", "5000", "--no-progress", "--out", run)
    proc = subprocess.Popen(argv, env={**sclib_env, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # until the first epoch is on disk (a guard against a hang, not a verdict)
            if (run / "history.csv").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert lines[-1] == INTERRUPTED and "Traceback" not in err, err
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    assert state["epoch"] >= 1 and not list(run.rglob("*.tmp"))
    # history.csv is written just after last.pt: a signal between the two leaves it one epoch behind
    assert state["epoch"] - 1 <= len(records.read_history(paths.RunPaths(run))) <= state["epoch"]


@pytest.mark.parametrize("sources, injected", [
    ([], set()),
    (["# Parameters\nepochs = 1\n"], {"epochs"}),
    (["x = 1", "# Parameters\ndataset = \"mnist\"\nconfig_overrides = {\"epochs\": 1}\n"],
     {"dataset", "config_overrides"}),
    (["# Parameters\n", "y = 2"], set()),
    (["print('# Parameters')\nz = 3"], set()),
])
def test_the_names_papermill_injected_are_read_from_its_cell(sources, injected):
    assert report.injected_names(sources) == injected


def test_check_parameters_refuses_a_name_the_notebook_does_not_declare(monkeypatch):
    monkeypatch.setattr(report, "injected_names", lambda: {"epochs", "dataset"})
    with pytest.raises(ConfigError) as err:
        report.check_parameters(dataset="digits", run_dir=None)
    message = str(err.value)
    assert "\n" not in message and "epochs" in message and "dataset, run_dir" in message
    assert "config_overrides" in message
    monkeypatch.setattr(report, "injected_names", lambda: {"dataset"})
    report.check_parameters(dataset="digits", run_dir=None)  # declared ones pass


@pytest.mark.slow
@pytest.mark.parametrize("argv, unknown", [(["-p", "epochs", "1"], "epochs"),
                                           (["-p", "epochs", "1", "-p", "lr", "0.1"], "epochs, lr")])
def test_papermill_with_an_undeclared_parameter_stops_before_training(tmp_path, argv, unknown):
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "papermill"), str(ROOT / "notebooks" / "01_pretrain.ipynb"),
                           str(tmp_path / "out.ipynb"), "--cwd", str(tmp_path), "-k", study.ensure_kernel(), *argv,
                           "-p", "run_dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0
    assert f"ConfigError: parameter(s) {unknown} are not parameters of this notebook" in proc.stderr, \
        proc.stderr[-2000:]
    assert "dataset, preset, run_dir, seeds" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was trained
