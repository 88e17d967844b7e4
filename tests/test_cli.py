"""The command line as a user meets it: help, version, tables, warnings and exit statuses."""

from __future__ import annotations

import json

import pytest

from sclib import __version__

TINY = ("--dataset", "digits", "--batch-size", "128", "--image-size", "8", "--mlp-hidden", "32", "--mlp-out", "16",
        "--device", "cpu", "--epochs", "1", "--no-progress")


def test_version_and_top_level_help(cli, capsys):
    import pytest

    from sclib.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"sclib {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "exit status: 0 done; 1 a run or notebook failed" in text
    for command in ("pretrain", "evaluate", "probe", "study", "sweep"):
        assert command in text


def test_no_head_of_the_class_count_is_a_warning_that_names_the_scored_head(cli, tmp_path):
    result = cli("pretrain", *TINY, "--heads", "7", "--out", str(tmp_path / "run"))
    assert result.code == 0
    warning = [line for line in result.err_lines if "no head has 10 classes" in line]
    assert warning and "head 0 with 7 clusters is scored" in warning[0]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["head_size"] == 7


def test_evaluate_and_probe_print_tables_and_keep_the_json(cli, tmp_path):
    assert cli("pretrain", *TINY, "--heads", "10", "20", "--seeds", "0", "1", "--out", str(tmp_path / "g")).code == 0
    shown = cli("evaluate", "--run", str(tmp_path / "g"))
    assert shown.code == 0 and not shown.out.lstrip().startswith(("{", "["))
    header, *rows = shown.out.strip().splitlines()
    assert header.split()[:4] == ["run", "epoch", "what", "acc"] and len(rows) == 6  # 2 seeds x (head, 2 baselines)
    report = json.loads((tmp_path / "g" / "seed1" / "eval.json").read_text())
    acc = report["heads"][report["evaluated_head"]]["acc"]
    assert f"{100 * acc:.2f}" in rows[3]
    probed = cli("probe", "--run", str(tmp_path / "g" / "seed0"), "--epochs", "2")
    assert probed.code == 0 and probed.out.splitlines()[0].split() == ["run", "epoch", "probe", "top1", "top3"]
    assert json.loads((tmp_path / "g" / "seed0" / "probe.json").read_text())[0]["probe"] == "knn"


def test_bad_input_is_exit_2_everywhere(cli, tmp_path):
    for argv in (("pretrain", "--epochs", "0"), ("evaluate", "--run", str(tmp_path)),
                 ("study", "--epochs", "-1", "--out", str(tmp_path / "s")),
                 ("study", "--param", "epochs=3", "--out", str(tmp_path / "s")),
                 ("sweep", "--grid", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "w"))):
        result = cli(*argv)
        assert result.code == 2 and len(result.err_lines) == 1 and result.err_lines[0].startswith("sclib: error:"), argv
    assert not (tmp_path / "s").exists() and not (tmp_path / "w").exists()


HEAVY_MODULES = ("torch", "torchvision", "sklearn", "matplotlib", "scipy", "pandas", "papermill")


@pytest.mark.parametrize("argv", [
    ["--help"], ["pretrain", "--help"], ["pretrain", "--dataset", "cifar10", "--preset", "gpu", "--help"],
    ["evaluate", "--help"], ["probe", "--help"], ["refine", "--help"], ["study", "--help"], ["sweep", "--help"],
    ["front", "--help"], ["pretrain", "--dataset", "mnist", "--epochs", "3", "--print-config"],
], ids=lambda argv: " ".join(argv))
def test_help_and_parsing_import_no_heavy_library(argv):
    """``python -m sclib --help`` took 7 s importing torch, torchvision and scikit-learn for a
    list of names; help and argument parsing now import them only when a command needs them.
    ``--print-config`` resolves a recipe (epochs given: keep_epochs refitted) without them too."""
    import subprocess
    import sys

    code = ("import sys\nfrom sclib.cli import build_parser, recipe_from_args\n"
            f"argv = {argv!r}\n"
            "try:\n    args = build_parser(argv).parse_args(argv)\nexcept SystemExit:\n    pass\n"
            "else:\n    print(recipe_from_args(args).resolve().keep_epochs)\n"
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]


@pytest.mark.parametrize("kind, registry", [("DATASETS", "sclib.data:REGISTRY"),
                                            ("BACKBONES", "sclib.core.model:BACKBONES"),
                                            ("OPTIMIZERS", "sclib.core.optim:OPTIMIZERS")])
def test_the_torch_free_names_are_those_the_modules_implement(kind, registry):
    """config validates against sclib.core.names (no torch); a name added to a registry and not there
    would be refused by every command."""
    import importlib

    from sclib.core import names

    module, attribute = registry.split(":")
    assert tuple(getattr(importlib.import_module(module), attribute)) == getattr(names, kind)
