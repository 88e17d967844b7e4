"""The adaptive ImageFolder recipe: choices from tiny folders of several kinds, checked by hand."""

from __future__ import annotations

import math

import pytest

from sclib.data import summarize_image_folder
from sclib.run.adapt import SECONDS_PER_VIEW_PIXEL, epoch_seconds
from sclib.run.config import ConfigError, make_config


def test_summary_counts_and_reads_headers(make_image_folder, tmp_path):
    got = summarize_image_folder(make_image_folder(tmp_path, classes=3, per_class=5, size=(40, 30), mode="RGB"))
    assert (got.classes, got.train_images, got.test_images) == (("class0", "class1", "class2"), 15, 6)
    assert (got.channels, got.native_size) == (3, 40)


def test_cost_model_is_linear_in_images_views_and_pixels():
    assert epoch_seconds(1000, 14, 2) == pytest.approx(1000 * 2 * 196 * SECONDS_PER_VIEW_PIXEL)
    assert epoch_seconds(2000, 28, 4, width=32) == pytest.approx(2 * 2 * 4 * 4 * epoch_seconds(1000, 14, 2))


@pytest.mark.parametrize("size, mode, classes, want_size, want_augment", [
    ((28, 28), "L", 3, 14, "affine"),     # MNIST-like: halved, no flips
    ((8, 8), "L", 2, 8, "affine"),        # tiny: kept
    ((64, 64), "RGB", 4, 32, "byol"),     # photos: halved and capped
    ((200, 150), "RGB", 2, 32, "byol"),   # large, not square: the longer side, capped
    ((20, 20), "RGB", 5, 12, "byol"),     # halved, but not below the floor
])
def test_fast_recipe_fits_the_folder(make_image_folder, tmp_path, size, mode, classes, want_size, want_augment):
    root = make_image_folder(tmp_path, classes=classes, size=size, mode=mode)
    cfg = make_config("imagefolder", "fast", data_root=str(root))
    assert cfg.image_size == want_size and cfg.augment == want_augment
    assert cfg.heads == [classes, 2 * classes, 4 * classes, 8 * classes]
    # a tiny folder leaves the budget room for extra views and the most epochs the recipe allows
    assert cfg.local_crops == 2 and cfg.epochs == 100 and cfg.warmup_epochs == 3
    assert cfg.keep_epochs[-1] == cfg.epochs and len(cfg.keep_epochs) == 4
    for word in (f"{4 * classes} train images", f"{classes} classes", "epochs 100"):
        assert word in cfg.adapted
    cfg.validate()


def test_epochs_follow_the_cpu_budget_and_the_users_flags_are_taken_as_given(tmp_path, monkeypatch):
    import sclib.run.adapt as adapt
    from sclib.data import FolderSummary

    def summary(images):
        return FolderSummary(tuple("abcdefghij"), images, 1000, 1, 28)

    monkeypatch.setattr(adapt, "summarize_image_folder", lambda root: summary(60_000))
    cfg = make_config("imagefolder", "fast", data_root=str(tmp_path))
    per_epoch = 60_000 * 2 * 14 * 14 * SECONDS_PER_VIEW_PIXEL
    assert cfg.local_crops == 0 and cfg.epochs == math.floor(8 * 60 / per_epoch) == 11
    assert "epochs 11" in cfg.adapted and f"{per_epoch:.1f} s an epoch" in cfg.adapted
    big = make_config("imagefolder", "fast", data_root=str(tmp_path), image_size=28)  # 4x the pixels
    assert big.image_size == 28 and big.epochs == max(5, math.floor(8 * 60 / (4 * per_epoch)))
    assert "image_size" not in big.adapted  # the user's choice is no adaptation
    fixed = make_config("imagefolder", "fast", data_root=str(tmp_path), epochs=3, heads=[10, 30])
    assert fixed.epochs == 3 and fixed.heads == [10, 30] and fixed.keep_epochs[-1] == 3
    monkeypatch.setattr(adapt, "summarize_image_folder", lambda root: summary(8_000))
    small = make_config("imagefolder", "fast", data_root=str(tmp_path))
    assert small.epochs == math.floor(8 * 60 / (8_000 * 2 * 196 * SECONDS_PER_VIEW_PIXEL)) == 85


def test_seed_recipe_only_sizes_its_heads(make_image_folder, tmp_path):
    root = make_image_folder(tmp_path, classes=5, size=(28, 28))
    cfg = make_config("imagefolder", "seed", data_root=str(root))
    assert cfg.heads == [5, 10, 20, 40] and cfg.image_size == 64 and cfg.epochs == 800


def test_an_adaptive_recipe_needs_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="--data-root"):
        make_config("imagefolder", "fast")
    (tmp_path / "train").mkdir()
    with pytest.raises(ConfigError, match=r"recipe fast/imagefolder: Image folder split .*test does not exist"):
        make_config("imagefolder", "fast", data_root=str(tmp_path))


def test_the_cli_prints_what_it_chose(make_image_folder, tmp_path, cli):
    root = make_image_folder(tmp_path, classes=2, size=(28, 28))
    result = cli("pretrain", "--dataset", "imagefolder", "--data-root", str(root), "--print-config")
    assert result.code == 0 and "image_size:     14" in result.out and "half" not in result.out.split("adapted")[0]
    assert "augment affine: grayscale" in result.out
