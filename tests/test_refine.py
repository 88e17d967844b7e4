"""The second stage end to end on digits: it improves a deliberately short pre-training run, writes
only refine/, resumes to the same result, and refuses settings or checkpoints it was not made with."""

from __future__ import annotations

import json
import shutil

import pytest

from sclib.eval.refine import NEIGHBOUR_FIELDS, refine_run
from sclib.run.config import ConfigError, RefineSettings, make_config
from sclib.train import pretrain

SHORT = dict(image_size=8, mlp_hidden=64, mlp_out=32, batch_size=128, heads=[10, 20], device="cpu", epochs=3,
             keep_epochs=[3])
SETTINGS = RefineSettings(neighbours=10, epochs=15, lr=1e-3, batch_size=256)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("refine") / "run"
    pretrain(make_config("digits", "fast", out=str(out), **SHORT), progress=False)
    return out


@pytest.fixture(scope="module")
def refined(short_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("refined") / "run"
    shutil.copytree(short_run, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    return copy, before, refine_run(copy, SETTINGS, device="cpu", progress=False)


def test_refine_improves_a_short_pre_training_run(refined):
    _, _, record = refined
    first = json.loads((refined[0] / "metrics.json").read_text())
    # the record's own first-stage numbers are the run's (same head, same eval split)
    assert record["first_stage"]["acc"] == pytest.approx(first["acc"], abs=0.02)
    assert record["scored"]["acc"] > record["first_stage"]["acc"] + 0.03, record
    assert record["scored"]["clusters_used"] == 10
    assert 0.5 < record["neighbour_agreement"] <= 1


def test_refine_writes_only_its_own_folder(refined):
    run, before, _ = refined
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before
    assert {p.name for p in (run / "refine").iterdir()} >= {"config.json", "history.csv", "state.pt", "eval.json"}


def test_refine_resumes_to_the_same_result(short_run, refined, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(short_run, copy)
    half = RefineSettings(**{**SETTINGS.__dict__, "epochs": 7})
    refine_run(copy, half, device="cpu", progress=False)
    (copy / "refine" / "config.json").write_text(json.dumps(  # as if it had been started with 15 epochs
        {**json.loads((copy / "refine" / "config.json").read_text()),
         "settings": {k: getattr(SETTINGS, k) for k in NEIGHBOUR_FIELDS}}))
    resumed = refine_run(copy, SETTINGS, device="cpu", progress=False)  # epochs 8-15 only
    assert resumed["scored"] == refined[2]["scored"]


@pytest.mark.parametrize("change", ["settings", "checkpoint"])
def test_refine_refuses_a_folder_made_otherwise(short_run, refined, tmp_path, change):
    copy = tmp_path / "run"
    shutil.copytree(refined[0], copy)
    settings = SETTINGS
    if change == "settings":
        settings = RefineSettings(**{**SETTINGS.__dict__, "neighbours": 5})
    else:
        shutil.rmtree(copy / "checkpoints")
        pretrain(make_config("digits", "fast", out=str(tmp_path / "other"), **{**SHORT, "seed": 1}), progress=False)
        shutil.copytree(tmp_path / "other" / "checkpoints", copy / "checkpoints")
    with pytest.raises(ConfigError, match=r"delete .*refine to refine afresh"):
        refine_run(copy, settings, device="cpu", progress=False)


@pytest.mark.parametrize("field, value", [("neighbours", 0), ("epochs", -1), ("self_label_epochs", -1),
                                          ("threshold", 1.0), ("batch_size", 0), ("lr", 0.0),
                                          ("entropy_weight", -1.0), ("weight_decay", -0.1)])
def test_bad_settings_are_one_line_errors(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        RefineSettings(**{field: value}).validate()


def test_refine_command_prints_both_rows(short_run, tmp_path, cli):
    copy = tmp_path / "run"
    shutil.copytree(short_run, copy)
    result = cli("refine", "--run", str(copy), "--epochs", "2", "--neighbours", "5", "--no-progress")
    assert result.code == 0, result.err_lines
    assert "Self-Classifier" in result.out and "+ neighbour consistency" in result.out
    bad = cli("refine", "--run", str(copy), "--neighbours", "0")
    assert bad.code == 2 and len(bad.err_lines) == 1 and "neighbours" in bad.err_lines[0]


def test_self_labelling_trains_the_whole_network_and_reports_its_own_row(refined, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(refined[0], copy)
    settings = RefineSettings(**{**SETTINGS.__dict__, "self_label_epochs": 2, "threshold": 0.5,
                                 "self_label_lr": 1e-4})
    record = refine_run(copy, settings, device="cpu", progress=False)
    assert record["scored"] == refined[2]["scored"]  # the neighbour stage was resumed, not redone
    labelled = record["self_label"]
    assert labelled["epochs"] == 2 and "skipped" not in labelled
    assert 256 <= labelled["confident"] <= 1797 - 360  # train split of digits' fast recipe
    assert abs(labelled["acc"] - record["scored"]["acc"]) < 0.3 and labelled["clusters_used"] >= 5
    rows = (copy / "refine" / "self_label_history.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,confident,classes,loss")


def test_self_labelling_says_why_when_too_few_images_pass(refined, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(refined[0], copy)
    settings = RefineSettings(**{**SETTINGS.__dict__, "self_label_epochs": 2, "threshold": 0.999999})
    record = refine_run(copy, settings, device="cpu", progress=False)
    assert record["self_label"]["epochs"] == 0
    assert "reach softmax >= 0.999999" in record["self_label"]["skipped"]
    assert "lower --threshold" in capsys.readouterr().err
