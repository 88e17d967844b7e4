"""Config: recipes are files resolved in one place; loose values are typed, bad values are named."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from sclib.data import DATASETS
from sclib.run.config import (
    PRESETS,
    RECIPE_FIELDS,
    RECIPES,
    Config,
    ConfigError,
    Recipe,
    config_from_file,
    differences,
    fit_keep_epochs,
    from_dict,
    load_config,
    make_config,
    preset,
    read_recipe,
    to_yaml,
)

ROOT = Path(__file__).resolve().parents[1]


def _recipes():
    return [(p.parent.name, p.stem) for p in sorted(RECIPES.glob("*/*.yaml"))]


def test_every_recipe_file_is_complete_and_resolves(image_folder):
    assert set(PRESETS) == {"fast", "gpu", "seed"}
    assert {d for p, d in _recipes() if p in ("fast", "seed")} == set(DATASETS)  # CPU and seed recipes everywhere
    for name, dataset in _recipes():
        values = yaml.safe_load((RECIPES / name / f"{dataset}.yaml").read_text())
        missing = set(RECIPE_FIELDS) - set(values)
        assert not missing, f"{name}/{dataset}.yaml lacks {missing}"
        cfg = make_config(dataset, name, data_root=str(image_folder))
        adapted = {part.split(" ")[0] for part in cfg.adapted.split("; ")[1:]}
        for key, value in values.items():  # nothing but the recipe's own adapt rules changes a value
            assert key == "adapt" or key in adapted or getattr(cfg, key) == value, (name, dataset, key)
        assert bool(adapted) == ("adapt" in values)
        assert cfg.preset == name and cfg.out == f"runs/{dataset}"


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10", "cifar20", "stl10", "digits", "imagefolder"])
def test_seed_recipes_are_the_reports_recipe(dataset, image_folder):
    cfg = make_config(dataset, "seed", data_root=str(image_folder))
    assert (cfg.backbone, cfg.epochs, cfg.batch_size) == ("resnet18", 800, 512)
    assert (cfg.start_lr, cfg.lr, cfg.min_lr, cfg.warmup_epochs) == (0.01, 0.4, 0.0004, 10)
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay) == ("sgd", 0.9, 1e-4)
    assert (cfg.row_tau, cfg.col_tau, cfg.mlp_hidden, cfg.mlp_out, cfg.local_crops) == (0.1, 0.05, 4096, 128, 0)
    assert cfg.keep_epochs[-1] == 800


@pytest.mark.parametrize("dataset, size, heads", [("mnist", 28, [10, 20, 40, 80]), ("cifar10", 32, [10, 20, 40, 80]),
                                                  ("cifar20", 32, [20, 40, 80, 160]), ("stl10", 96, [10, 20, 40, 80])])
def test_seed_recipes_follow_the_data_set(dataset, size, heads):
    cfg = make_config(dataset, "seed")
    assert cfg.image_size == size and cfg.heads == heads
    assert cfg.scored_head(heads[0]) == 0 and cfg.head_warning(heads[0]) is None


def test_help_shows_what_the_recipe_resolves_to(capsys, image_folder):
    from sclib.cli import build_parser

    for name, dataset in _recipes():
        argv = ["pretrain", "--dataset", dataset, "--preset", name, "--data-root", str(image_folder), "--help"]
        with pytest.raises(SystemExit):
            build_parser(argv).parse_args(argv)
        text = " ".join(capsys.readouterr().out.split())
        cfg = make_config(dataset, name, data_root=str(image_folder))
        assert f"recipe {name}/{dataset}" in text
        for field in ("epochs", "image_size", "batch_size", "heads", "local_crops", "row_tau"):
            flag = "--" + field.replace("_", "-")
            shown = text.split(flag + " ", 2)[-1]
            assert f"(default: {getattr(cfg, field)})" in shown.split(" --")[0], (name, dataset, field)


def test_print_config_round_trips_through_config(tmp_path, cli):
    result = cli("pretrain", "--dataset", "cifar20", "--preset", "gpu", "--epochs", "7", "--print-config")
    assert result.code == 0
    path = tmp_path / "recipe.yaml"
    path.write_text(result.out)
    cfg = config_from_file(path)
    assert cfg == make_config("cifar20", "gpu", epochs=7)
    # a run's config.json replays the run; flags still override it
    record = tmp_path / "config.json"
    record.write_text(json.dumps({"config": cfg.to_dict(), "provenance": {"torch": "x"}}))
    again = config_from_file(record, seed=3)
    assert again.seed == 3 and dataclasses.replace(again, seed=cfg.seed) == cfg
    assert cli("pretrain", "--config", str(record), "--preset", "fast").code == 2  # one recipe, not two


def test_a_recipe_of_ones_own_needs_every_training_choice(tmp_path):
    values = read_recipe(RECIPES / "fast" / "digits.yaml")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in values.items() if k != "row_tau"}))
    with pytest.raises(ConfigError, match="does not set row_tau"):
        config_from_file(path, dataset="digits")
    path.write_text(yaml.safe_dump({**values, "rowtau": 0.1}))
    with pytest.raises(ConfigError, match=r"unknown parameter.*rowtau"):
        config_from_file(path, dataset="digits")
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="names no dataset"):
        config_from_file(path)
    assert config_from_file(path, dataset="digits") == dataclasses.replace(make_config("digits"), preset="custom")
    assert Recipe("digits", file=str(path)).resolve(under={"epochs": 9}, over={"seed": 2}).epochs == 9


def test_shortened_runs_keep_a_probe_curve():
    assert make_config("digits").keep_epochs == [10, 25, 50, 100]
    assert make_config("digits", epochs=60).keep_epochs == [10, 25, 50, 60]  # the recipe's points that fit
    assert make_config("digits", epochs=30).keep_epochs == [8, 15, 22, 30]  # too few fit: evenly spaced
    assert make_config("digits", epochs=4).keep_epochs == [1, 2, 3, 4]
    assert make_config("digits", epochs=4, keep_epochs=[4]).keep_epochs == [4]  # an explicit choice stands
    assert fit_keep_epochs([5, 10, 20, 30], 25) == [5, 10, 20, 25]
    for epochs in (1, 2, 7):
        points = fit_keep_epochs([50, 100], epochs)
        assert points[-1] == epochs and points == sorted(set(points)) and points[0] >= 1


def test_every_committed_config_json_reads_under_todays_field_names():
    """keep_epochs was once called milestones; the committed config.json files were migrated and the
    old name is gone, so a file that still used it would be refused here as an unknown parameter."""
    files = sorted((ROOT / "results").rglob("config.json"))
    assert len(files) >= 30
    for path in files:
        cfg = load_config(path)
        assert cfg.keep_epochs and all(isinstance(e, int) for e in cfg.keep_epochs), path
    with pytest.raises(ConfigError, match=r"unknown parameter.*milestones"):
        make_config("digits", milestones=[2, 4])


def test_papermill_strings_are_coerced():
    cfg = make_config("digits", epochs="7", heads="[10, 20]", amp="false", lr="0.1", local_size="None")
    assert cfg.epochs == 7 and cfg.heads == [10, 20] and cfg.amp is False and cfg.lr == 0.1
    assert cfg.local_size is None


@pytest.mark.parametrize("overrides, names", [
    ({"dataset": "imagenet"}, "dataset 'imagenet' is unknown"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": -4}, "batch_size must be a positive integer"),
    ({"row_tau": 0.0}, "row_tau must be positive"),
    ({"col_tau": -0.05}, "col_tau must be positive"),
    ({"lr": 0}, "lr must be positive"),
    ({"heads": []}, "heads must list at least one head size"),
    ({"heads": [10, 1]}, "every head needs at least 2 classes"),
    ({"optimizer": "adam"}, "optimizer 'adam' is unknown"),
    ({"backbone": "vgg"}, "backbone 'vgg' is unknown; choose one of resnet18, small"),
    ({"augment": "strong"}, "augment 'strong' is unknown"),
    ({"cls_gain": "free"}, "cls_gain 'free' is unknown; choose one of fixed, learned"),
    ({"global_scale": [0.5, 0.2]}, "global_scale must be two numbers"),
])
def test_invalid_values_are_named(overrides, names):
    values = {**make_config("digits").to_dict(), **overrides}
    with pytest.raises(ConfigError, match=names):
        from_dict(values).validate()


def test_wrong_type_names_parameter_and_value():
    with pytest.raises(ConfigError, match=r"parameter epochs got 'ten', which is not a valid int"):
        make_config("digits", epochs="ten")
    with pytest.raises(ConfigError, match=r"parameter epochs got 2.5"):
        make_config("digits", epochs=2.5)


def test_unknown_parameter_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter.*epoch_count.*known: dataset"):
        make_config("digits", epoch_count=3)


def test_a_head_larger_than_the_batch_is_valid():
    assert make_config("digits", batch_size=16, heads=[10, 8000]).heads == [10, 8000]


def test_no_head_of_the_class_count_is_named_in_a_warning():
    cfg = make_config("digits", heads=[7, 14])
    assert cfg.scored_head(10) == 0
    warning = cfg.head_warning(10)
    assert "no head has 10 classes" in warning and "head 0 with 7 clusters" in warning and "--heads" in warning


def test_cuda_without_gpu_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        make_config("digits", device="cuda")


def test_differences_ignore_where_and_how_but_not_what():
    a = make_config("digits", out="a", device="cpu")
    b = make_config("digits", out="b", device="auto", epochs=a.epochs + 1, row_tau=0.2)
    assert set(differences(a, b)) == {"epochs", "row_tau"}
    assert differences(a, dataclasses.replace(a, preset="custom")) == {}


def test_unknown_preset_and_missing_recipe():
    with pytest.raises(ConfigError, match="preset 'slow' is unknown"):
        preset("slow", "digits")
    with pytest.raises(ConfigError, match=r"preset 'gpu' has no recipe for digits .*cifar10"):
        make_config("digits", "gpu")


def test_every_field_has_help_and_the_recipe_fields_have_no_default():
    for f in dataclasses.fields(Config):
        assert f.metadata["help"], f.name
    with pytest.raises(TypeError):
        Config(dataset="digits")  # a recipe must say every training choice
    assert to_yaml(make_config("digits")).count("\n") == len(dataclasses.fields(Config)) + 1
