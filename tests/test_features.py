"""A checkpoint's features: predict under the run's precision, and the run folder's cache, which is
used only for the very weights, images and transform it was made from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sclib.eval import features
from sclib.eval.evaluate import evaluate_run
from sclib.eval.features import Predictions, checkpoint_predictions, predict
from sclib.eval.probe import probe_run
from sclib.run import checkpoint
from sclib.run.build import augment_config, load_data, load_model
from sclib.run.config import make_config
from sclib.run.paths import RunPaths, open_run
from sclib.train import pretrain

TINY = dict(image_size=8, mlp_hidden=32, mlp_out=16, batch_size=128, heads=[10, 20], device="cpu", epochs=2,
            keep_epochs=[1, 2])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "run"
    pretrain(make_config("digits", "fast", out=str(out), **TINY), progress=False)
    return out


def parts(run_dir):
    cfg, paths = open_run(run_dir)
    data = load_data(cfg)
    return cfg, paths, data, augment_config(cfg, data.info)


def test_predict_equals_a_plain_forward_in_eval_mode(run):
    _, _, data, aug = parts(run)
    model, _ = load_model(run, data.info)
    images = data.eval_images[:300]
    preds = predict(model, images, aug, batch_size=128, amp=False)  # batches of 128, 128, 44
    with torch.no_grad():
        x = (images.float() / 255 - torch.tensor(aug.mean).view(1, -1, 1, 1)) / torch.tensor(aug.std).view(1, -1, 1, 1)
        x = torch.nn.functional.interpolate(x, size=(aug.image_size,) * 2, mode="bilinear", align_corners=False)
        f = model.backbone(x)
        logits = model.classify(torch.nn.functional.normalize(model.projector(f), dim=1))
    np.testing.assert_allclose(preds.features, f.numpy(), rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(preds.logits, logits):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5)
    backbone_only = predict(model, images, aug, batch_size=128, amp=False, heads=False)
    np.testing.assert_array_equal(backbone_only.features, preds.features)
    assert backbone_only.logits == []


def test_the_cache_is_used_for_the_same_checkpoint(run, monkeypatch):
    cfg, paths, data, aug = parts(run)
    first, epoch = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images)
    assert epoch == 2 and len(list((run / "features").glob("eval-*.npz"))) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(features, "predict", no_model)
    again, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images)
    np.testing.assert_array_equal(again.features, first.features)
    for a, b in zip(again.logits, first.logits):
        np.testing.assert_array_equal(a, b)
    # the last milestone holds the same weights as last.pt: one cache file for both
    milestone, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images,
                                          paths.checkpoints / checkpoint.kept_name(2))
    np.testing.assert_array_equal(milestone.features, first.features)


def _retrain_last(paths: RunPaths) -> None:
    """last.pt with changed weights, as a second training into the same folder would leave it."""
    state = checkpoint.load(paths.last)
    state["model"] = {k: v + 0.05 if v.is_floating_point() else v for k, v in state["model"].items()}
    checkpoint.save(paths.last, state)


def _other_images(images: torch.Tensor) -> torch.Tensor:
    changed = images.clone()
    changed[0] = 255 - changed[0]
    return changed


@pytest.mark.parametrize("change", ["checkpoint", "images", "transform", "precision"])
def test_the_cache_is_refused_when_what_it_was_made_from_changed(tmp_path, run, change, monkeypatch):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg, paths, data, aug = parts(copy)
    images = data.eval_images
    checkpoint_predictions(cfg, paths, data.info, aug, "eval", images)
    if change == "checkpoint":
        _retrain_last(paths)
    elif change == "images":
        images = _other_images(images)
    elif change == "transform":
        aug = type(aug)(**{**aug.__dict__, "mean": tuple(m + 0.1 for m in aug.mean)})
    else:
        cfg = type(cfg)(**{**cfg.__dict__, "amp": not cfg.amp})
    calls = []
    real = features.predict
    monkeypatch.setattr(features, "predict", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", images)
    assert calls == [1]  # the stale file was not trusted ...
    model, _ = load_model(copy, data.info)
    truth = real(model, images, aug, amp=cfg.amp)
    np.testing.assert_array_equal(fresh.features, truth.features)  # ... and the answer is the current one
    for a, b in zip(fresh.logits, truth.logits):
        np.testing.assert_array_equal(a, b)


def test_a_damaged_cache_file_is_recomputed(tmp_path, run):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg, paths, data, aug = parts(copy)
    first, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images)
    for cached in (copy / "features").glob("*.npz"):
        cached.write_bytes(cached.read_bytes()[:100])
    again, _ = checkpoint_predictions(cfg, paths, data.info, aug, "eval", data.eval_images)
    np.testing.assert_array_equal(again.features, first.features)


def test_probe_and_evaluation_share_the_eval_features(tmp_path, run, monkeypatch):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    probe_run(copy, epochs=2)  # last.pt: train and eval features cached
    calls = []
    real = features.predict

    def counting(*args, **kwargs):
        calls.append(kwargs.get("heads", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "predict", counting)
    evaluation = evaluate_run(copy)
    assert calls == []  # the evaluation read what the probe computed
    assert evaluation.epoch == 2


def test_an_empty_split_predicts_nothing(run):
    _, _, data, aug = parts(run)
    model, _ = load_model(run, data.info)
    empty = predict(model, data.eval_images[:0], aug)
    assert isinstance(empty, Predictions) and empty.features.shape == (0, 0) and empty.logits == []
