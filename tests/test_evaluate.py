"""Evaluation at the edges: the smallest legal data, collapsed and diverged runs, features without spread.

Every step with a minimum size (k-means, t-SNE, UMAP, the probes, the batch, the heads) either
computes what it can and says what it skipped, or refuses up front in one line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sclib.eval import evaluate
from sclib.eval.checks import collapse_warning, spread_problem
from sclib.eval.evaluate import EvaluationError, Predictions, kmeans_metrics
from sclib.eval.probe import knn_probe, linear_probe
from sclib.report import notebook as report
from sclib.run import records
from sclib.run.build import size_notes
from sclib.run.config import ConfigError, make_config
from sclib.run.files import read_json
from sclib.run.paths import RunPaths


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blobs(n: int, k: int = 3, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    return (np.eye(k, d)[labels] * 5 + rng.normal(size=(n, d))).astype(np.float32), labels


# ------------------------------------------------------------------ steps with a minimum size

ROWS = {  # rows of features -> whether a step needing 3 distinct rows can take them
    "enough": (_blobs(30)[0], None),
    "too few samples": (_blobs(2)[0], "needs at least 3 samples, the split has 2"),
    "all rows equal": (np.ones((50, 8), np.float32), "hold 1 (the features have no spread)"),
    "two distinct rows": (np.repeat(np.eye(2, 8, dtype=np.float32), 20, axis=0), "hold 2"),
    "an inf row": (np.vstack([_blobs(10)[0], np.full((1, 8), np.inf, np.float32)]), "1 of 11 feature rows"),
    "a nan row": (np.vstack([_blobs(10)[0], np.full((1, 8), np.nan, np.float32)]), "not finite"),
}


@pytest.mark.parametrize("case", ROWS)
def test_spread_problem_says_what_a_step_cannot_take(case):
    x, expected = ROWS[case]
    problem = spread_problem(x, 3, "step")
    if expected is None:
        assert problem is None
    else:
        assert problem.startswith("step skipped:") and expected in problem and "\n" not in problem


@pytest.mark.parametrize("case", ROWS)
def test_kmeans_computes_or_skips_with_a_reason(case):
    x, expected = ROWS[case]
    labels = np.arange(len(x)) % 3
    got = kmeans_metrics(x, labels, 3, step="k-means on pixels")
    if expected is None:
        assert got["acc"] > 0.9 and "skipped" not in got  # three clean blobs
    else:
        assert all(got[m] is None for m in ("nmi", "ami", "ari", "acc")) and expected in got["skipped"]


@pytest.mark.parametrize("method", ["tsne", "umap"])
@pytest.mark.parametrize("case", ["too few samples", "all rows equal", "two distinct rows", "an inf row"])
def test_embeddings_refuse_rows_they_cannot_take_before_the_library_sees_them(method, case):
    x = ROWS[case][0]
    with pytest.raises(report.TooLittleData, match=r"(t-SNE|UMAP) skipped: "):
        report.embed_2d(x, method)


def test_tsne_of_constant_features_is_refused_not_a_segfault():
    """The issue's example: scikit-learn's t-SNE kills the process (exit 139) on equal rows."""
    code = ("import numpy as np\nfrom sclib.report.notebook import embed_2d, TooLittleData\n"
            "try:\n    embed_2d(np.ones((50, 16), np.float32), 'tsne')\n"
            "except TooLittleData as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and "no spread" in done.stdout, (done.returncode, done.stderr[-500:])


def test_embedding_figures_say_what_they_skipped(tmp_path, capsys):
    view = report.RunView(cfg=None, paths=RunPaths(tmp_path), labels=np.zeros(3, int), class_names=("a",),
                          _features=np.ones((3, 4), np.float16), heads=np.zeros((1, 3), int), head_sizes=(2,),
                          scored_head=0, epoch=1, sample_index=np.arange(3),
                          sample_images=np.zeros((3, 1, 2, 2), np.uint8))
    assert report.embedding_figures(view, np.arange(3), "tsne", tmp_path) == []
    assert "t-SNE skipped: it needs at least 5 samples, the split has 3" in capsys.readouterr().out


def _view_with_features(folder: Path, features: np.ndarray, epoch: int = 3) -> report.RunView:
    folder.mkdir(parents=True, exist_ok=True)
    evaluate.export_features(folder / "eval_features.npz", features)
    n = len(features)
    return report.RunView(cfg=None, paths=RunPaths(folder), labels=np.arange(n) % 3, class_names=("a", "b", "c"),
                          heads=(np.arange(n) % 2)[None], head_sizes=(2,), scored_head=0, epoch=epoch,
                          sample_index=np.arange(2), sample_images=np.zeros((2, 1, 2, 2), np.uint8))


EMBEDDING_CHANGES = {  # what differs from the stored embedding's making -> the call that asks for it
    "subsample": lambda view, features: (view, np.arange(1, 21), "tsne", 0),
    "seed": lambda view, features: (view, np.arange(20), "tsne", 1),
    "method": lambda view, features: (view, np.arange(20), "umap", 0),
    "evaluated epoch": lambda view, features: (_view_with_features(view.paths.root, features, epoch=4),
                                               np.arange(20), "tsne", 0),
    "features": lambda view, features: (_view_with_features(view.paths.root, features + 1), np.arange(20), "tsne", 0),
}


@pytest.mark.parametrize("change", EMBEDDING_CHANGES)
def test_a_stored_embedding_is_used_only_for_what_it_was_made_from(tmp_path, change):
    features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    view = _view_with_features(tmp_path / "run", features)
    xy = np.random.default_rng(1).normal(size=(20, 2))
    report.store_embedding(view, np.arange(20), "tsne", 0, xy)
    np.testing.assert_array_equal(report.cached_embedding(view, np.arange(20), "tsne", 0), xy.astype(np.float32))
    assert report.cached_embedding(*EMBEDDING_CHANGES[change](view, features)) is None


def test_a_clone_without_features_draws_the_committed_embedding_and_computes_nothing(tmp_path, monkeypatch, capsys):
    features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    view = _view_with_features(tmp_path / "run", features)
    first = report.embedding_figures(view, np.arange(30), "tsne", tmp_path / "figures")
    assert len(first) == 2 and "t-SNE: import" in capsys.readouterr().out
    stored = report.cached_embedding(view, np.arange(30), "tsne", 0)
    (tmp_path / "run" / "eval_features.npz").unlink()  # what a clone holds: no features
    clone = _view_with_features(tmp_path / "other", features)
    (tmp_path / "other" / "eval_features.npz").unlink()
    shutil.copy(tmp_path / "run" / "embeddings.json", tmp_path / "other" / "embeddings.json")
    monkeypatch.setattr(report, "embed_2d", lambda *a, **k: pytest.fail("recomputed a stored embedding"))
    assert len(report.embedding_figures(clone, np.arange(30), "tsne", tmp_path / "figures2")) == 2
    assert "read from embeddings.json" in capsys.readouterr().out
    np.testing.assert_array_equal(report.cached_embedding(clone, np.arange(30), "tsne", 0), stored)
    gone = re.escape("eval_features.npz does not exist; rerun `python -m sclib evaluate")
    with pytest.raises(FileNotFoundError, match=gone):
        report.embedding_figures(clone, np.arange(29), "tsne", tmp_path / "figures3")  # another subsample


def test_a_run_evaluated_again_forgets_its_embeddings(cli, tiny_args, tmp_path):
    run = tmp_path / "r"
    assert cli("pretrain", *tiny_args, "--epochs", "1", "--no-progress", "--out", run).code == 0
    (run / "embeddings.json").write_bytes(b"drawn from the previous weights")
    (run / "arrays.npz").write_bytes(b"an earlier version's arrays")
    assert cli("evaluate", "--run", run).code == 0
    assert not (run / "embeddings.json").exists() and not (run / "arrays.npz").exists()
    arrays = records.read_arrays(RunPaths(run))
    assert "features" not in arrays and arrays["sample_images"].shape[0] <= 10 * 10
    with np.load(run / "eval_features.npz") as saved:
        assert saved["features"].dtype == np.float16 and saved["features"].shape[0] == len(arrays["labels"])


def test_knn_probe_with_fewer_training_samples_than_k_uses_and_records_them_all():
    x, y = _blobs(7)
    got = knn_probe(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x), torch.from_numpy(y), 3, k=20)
    assert got["k"] == 7 and got["top1"] == 1.0
    assert knn_probe(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x), torch.from_numpy(y), 3,
                     k=2)["k"] == 2


def test_linear_probe_refuses_a_split_it_cannot_standardise():
    x, y = (torch.from_numpy(a) for a in _blobs(4))
    with pytest.raises(ValueError, match="at least 2 training and 1 eval samples, got 1 and 4"):
        linear_probe(x[:1], y[:1], x, y, 3, epochs=1)
    assert set(linear_probe(x[:2], y[:2], x, y, 3, epochs=1)) == {"top1", "top3"}


SIZES = {  # (batch, heads, train images, eval images) -> the note that must be said
    "batch larger than the data": ((256, [3], 100, 50), "batch_size 256 is larger than the 100 training images"),
    "heads larger than the data": ((8, [3, 200], 100, 50), "heads [200] have more clusters than the 100 training"),
    "eval split smaller than the classes": ((8, [3], 100, 2), "the eval split holds 2 images for 3 classes"),
}


@pytest.mark.parametrize("case", SIZES)
def test_sizes_that_change_a_run_are_said_before_it_trains(case):
    (batch, heads, train, evals), expected = SIZES[case]
    cfg = make_config("digits", batch_size=batch, heads=heads, out="x")
    notes = size_notes(cfg, train, evals, 3)
    assert len(notes) == 1 and notes[0].startswith(expected)
    assert size_notes(make_config("digits", batch_size=8, heads=[3], out="x"), 100, 50, 3) == []


def test_a_train_split_of_one_image_is_refused_up_front(cli, tiny_args, tmp_path):
    with pytest.raises(ConfigError, match="the train split holds 1 image"):
        size_notes(make_config("digits", out="x"), 1, 50, 10)
    result = cli("pretrain", *tiny_args, "--epochs", "1", "--val-fraction", "0.9995", "--out", tmp_path / "r")
    assert result.code == 2 and len(result.err_lines) == 1 and "train split holds 1 image" in result.err_lines[0]
    assert not (tmp_path / "r").exists()


def test_the_smallest_validation_split_evaluates_and_says_what_it_skipped(cli, tiny_args, tmp_path):
    """The issue's example: --val-fraction 0.005 leaves 6 eval images for 10 classes; evaluate
    ended in a k-means traceback and wrote no eval.json."""
    from sclib.report.summary import write_summary

    run = tmp_path / "study" / "run" / "seed0"
    result = cli("pretrain", *tiny_args, "--epochs", "1", "--val-fraction", "0.005", "--no-progress", "--out", run)
    assert result.code == 0
    assert any(line.startswith("note: the eval split holds 6 images for 10 classes") for line in result.err_lines)
    result = cli("evaluate", "--run", run)
    assert result.code == 0, result.err_lines
    saved = read_json(run / "eval.json")
    assert saved["eval_images"] == 6 and (run / "arrays.json").exists() and (run / "samples.png").exists()
    for key in ("kmeans_features", "kmeans_pixels"):
        assert saved[key]["acc"] is None and "needs at least 10 samples, the split has 6" in saved[key]["skipped"]
        assert any(saved[key]["skipped"] in line for line in result.err_lines)
    assert re.search(r"kmeans on pixels\s+n/a", result.out)  # as summary.md's table says it
    summary = write_summary(tmp_path / "study").read_text()
    assert "k-means on pixels (k=10) skipped" in summary and "| k-means on pixels | n/a" in summary


# ---------------------------------------------------------------------------- degenerate runs

COLLAPSES = {  # (clusters used, head size, eval images) -> collapsed?
    "one of ten clusters": ((1, 10, 540), True),
    "four of ten": ((4, 10, 540), True),
    "five of ten": ((5, 10, 540), False),
    "all ten": ((10, 10, 540), False),
    "three of the six images a tiny split allows": ((3, 10, 6), False),
    "two of six": ((2, 10, 6), True),
}


@pytest.mark.parametrize("case", COLLAPSES)
def test_collapse_is_fewer_than_half_the_clusters_the_head_could_use(case):
    (used, size, n), collapsed = COLLAPSES[case]
    warning = collapse_warning({"clusters_used": used, "head_size": size}, n)
    assert (warning is not None) == collapsed
    if collapsed:
        assert f"into {used} of its {size} clusters" in warning


def test_a_collapsed_run_says_so_in_the_log_metrics_eval_summary_and_report(cli, tiny_args, tmp_path):
    """The issue's example: --lr 1000 ended with exit 0, no warning and one cluster in use."""
    from sclib.report.summary import write_summary

    run = tmp_path / "study" / "run" / "seed0"
    result = cli("pretrain", *tiny_args, "--epochs", "2", "--lr", "1000", "--no-progress", "--out", run)
    assert result.code == 0
    logged = [line for line in result.err_lines if line.startswith("warning: collapse:")]
    assert len(logged) == 1 and "into 1 of its 10 clusters" in logged[0]
    assert read_json(run / "metrics.json")["warning"] == logged[0].removeprefix("warning: ")
    assert cli("evaluate", "--run", run).code == 0
    assert any(w.startswith("collapse:") for w in read_json(run / "eval.json")["warnings"])
    assert "## Warnings" in write_summary(tmp_path / "study").read_text()
    runs = report.open_runs(run)
    assert "into 1 of its 10 clusters" in report.warnings_markdown(runs)
    assert "warning" not in report.final_metrics(runs).columns


@pytest.mark.parametrize("metrics", sorted(Path(__file__).resolve().parents[1].glob("results/**/metrics.json")),
                         ids=lambda p: str(p).split("results/")[-1])
def test_no_committed_run_is_flagged_as_collapsed(metrics):
    """The committed studies and sweeps are healthy runs: the warning must not cry wolf on them."""
    scored = read_json(metrics)
    evals = metrics.with_name("eval.json")
    n = read_json(evals).get("eval_images", 10**9) if evals.exists() else 10**9
    assert collapse_warning(scored, n) is None


def test_a_loss_non_finite_before_any_checkpoint_names_no_checkpoint_and_blocks_no_retry(cli, tiny_args, tmp_path):
    """The issue's example: --lr 1e30 pointed at checkpoints/last.pt, which did not exist, and
    the retry with a lower --lr that the message advised was refused (different config)."""
    run = tmp_path / "run"
    result = cli("pretrain", *tiny_args, "--epochs", "1", "--lr", "1e30", "--no-progress", "--out", run)
    assert result.code == 2 and len(result.err_lines) == 1
    line = result.err_lines[0]
    assert "non-finite in epoch 1" in line and "last.pt" not in line and "no checkpoint was written" in line
    named = [Path(p) for p in re.findall(r"(/\S+?)[,.;]?(?:\s|$)", line)]
    assert named and all(p.exists() for p in named), named
    retry = cli("pretrain", *tiny_args, "--epochs", "1", "--no-progress", "--out", run)
    assert retry.code == 0, retry.err_lines
    assert read_json(run / "config.json")["config"]["lr"] != 1e30


def test_a_folder_with_results_still_refuses_another_config(cli, tiny_args, tmp_path):
    run = tmp_path / "run"
    assert cli("pretrain", *tiny_args, "--epochs", "1", "--no-progress", "--out", run).code == 0
    for path in (run / "checkpoints").glob("*.pt"):
        path.unlink()  # a run copied home without checkpoints: its metrics.json still counts
    result = cli("pretrain", *tiny_args, "--epochs", "1", "--lr", "0.5", "--no-progress", "--out", run)
    assert result.code == 2 and "different config" in result.err_lines[-1]


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e5, 1e30])
def test_exported_features_stay_finite_and_exact_enough(tmp_path, scale):
    """float16 overflows above 65504: --lr 30000 made every exported row inf."""
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(20, 4)) * scale).astype(np.float32)
    path = evaluate.export_features(tmp_path / "eval_features.npz", features)
    with np.load(path) as arrays:
        saved = arrays["features"]
    assert np.isfinite(saved).all()
    assert saved.dtype == (np.float16 if scale < 1e4 else np.float32)  # float16 while it holds them
    np.testing.assert_allclose(saved.astype(np.float64), features, rtol=1e-3)


@pytest.mark.parametrize("where", ["features", "logits"])
def test_a_diverged_model_is_refused_before_anything_is_exported(where):
    preds = Predictions(np.ones((5, 4), np.float32), [np.ones((5, 3), np.float32)])
    (preds.features if where == "features" else preds.logits[0])[2, 1] = np.nan
    with pytest.raises(EvaluationError, match=f"non-finite {where} for 1 eval images"):
        evaluate.check_finite(preds, "runs/x")


@pytest.mark.parametrize("channels, count", [(1, 0), (1, 7), (3, 10), (3, 23)],
                         ids=["grey, none", "grey, a row short", "colour, one full row", "colour, three rows"])
def test_the_exported_arrays_and_sample_images_read_back_exactly(tmp_path, channels, count):
    """arrays.json + samples.png (plain formats a study commits) give back every array bit for bit."""
    from sclib.run import exports

    rng = np.random.default_rng(count)
    labels, assigned = rng.integers(0, 10, 50), rng.integers(0, 160, (4, 50))
    images = rng.integers(0, 256, (count, channels, 5, 7), dtype=np.uint8)
    index = np.sort(rng.choice(50, count, replace=False))
    exports.write_arrays(tmp_path / "a.json", tmp_path / "s.png", labels, assigned, [10, 20, 40, 160], index, images)
    back = exports.read_arrays(tmp_path / "a.json", tmp_path / "s.png", "evaluate again")
    for name, expected in (("labels", labels), ("assigned", assigned), ("head_sizes", [10, 20, 40, 160]),
                           ("sample_index", index), ("sample_images", images)):
        np.testing.assert_array_equal(back[name], expected, err_msg=name)
    assert back["sample_images"].dtype == np.uint8 and back["sample_images"].shape == images.shape
    assert tmp_path.joinpath("a.json").read_bytes()[:1] == b"{"  # text, not an archive


def test_stored_embeddings_read_back_with_their_dtypes_and_shapes(tmp_path):
    from sclib.run import exports

    values = {"xy": np.random.default_rng(0).normal(size=(9, 2)).astype(np.float32) * 1e3,
              "tiny": np.array([1e-30, -3.4e38], dtype=np.float32), "none": np.zeros((0, 2), np.float32),
              "idx": np.arange(9), "epoch": np.array(3), "sha": np.array("ab" * 32)}
    exports.write_embeddings(tmp_path / "e.json", values)
    back = exports.read_embeddings(tmp_path / "e.json")
    assert back.keys() == values.keys()
    for name, expected in values.items():
        assert back[name].dtype == expected.dtype and back[name].shape == expected.shape, name
        np.testing.assert_array_equal(back[name], expected, err_msg=name)
    (tmp_path / "e.json").write_text('{"xy": {"dtype": "<f4"')  # cut: only a cache, read as empty
    assert exports.read_embeddings(tmp_path / "e.json") == {}
