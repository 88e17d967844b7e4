"""Config: presets carry the seed recipe, loose values are typed, bad values are named."""

import pytest

from sclib.config import Config, ConfigError, differences, from_dict, make_config, preset


def test_seed_preset_is_the_reports_recipe():
    cfg = make_config("cifar10", "seed")
    assert (cfg.backbone, cfg.epochs, cfg.batch_size) == ("resnet18", 800, 512)
    assert (cfg.start_lr, cfg.lr, cfg.min_lr, cfg.warmup_epochs) == (0.01, 0.4, 0.0004, 10)
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay) == ("sgd", 0.9, 1e-4)
    assert (cfg.row_tau, cfg.col_tau) == (0.1, 0.05)
    assert cfg.heads == [10, 20, 40, 80] and cfg.image_size == 32


@pytest.mark.parametrize("dataset, size, first_head", [("mnist", 28, 10), ("cifar20", 32, 20), ("stl10", 96, 10)])
def test_presets_follow_the_data_set(dataset, size, first_head):
    cfg = make_config(dataset, "seed")
    assert cfg.image_size == size and cfg.heads[0] == first_head
    assert cfg.evaluated_head(first_head) == 0


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
    ({"global_scale": [0.5, 0.2]}, "global_scale must be two numbers"),
])
def test_invalid_values_are_named(overrides, names):
    values = {**Config().to_dict(), **overrides}
    with pytest.raises(ConfigError, match=names):
        from_dict(values).validate()


def test_wrong_type_names_parameter_and_value():
    with pytest.raises(ConfigError, match=r"parameter epochs got 'ten', which is not a valid int"):
        make_config("digits", epochs="ten")
    with pytest.raises(ConfigError, match=r"parameter epochs got 2.5"):
        make_config("digits", epochs=2.5)


def test_unknown_parameter_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown parameter.*epoch_count.*known: dataset"):
        make_config("digits", epoch_count=3)


def test_a_head_larger_than_the_batch_is_valid():
    assert make_config("digits", batch_size=16, heads=[10, 8000]).heads == [10, 8000]


def test_cuda_without_gpu_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        make_config("digits", device="cuda")


def test_differences_ignore_where_and_how_but_not_what():
    a = make_config("digits", out="a", device="cpu")
    b = make_config("digits", out="b", device="auto", epochs=a.epochs + 1, row_tau=0.2)
    assert set(differences(a, b)) == {"epochs", "row_tau"}


def test_unknown_preset():
    with pytest.raises(ConfigError, match="preset 'slow' is unknown"):
        preset("slow", "digits")
