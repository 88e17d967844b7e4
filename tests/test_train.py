"""Pre-training end to end on digits: files, exact resume, probes that leave the backbone alone."""

import csv
import json

import pytest
import torch

from sclib.eval.evaluate import evaluate_run
from sclib.eval.probe import probe_run
from sclib.run import checkpoint
from sclib.run.config import make_config
from sclib.train import Trainer, pretrain

TINY = dict(image_size=8, mlp_hidden=32, mlp_out=16, batch_size=128, heads=[10, 20], device="cpu")


def tiny(tmp_path, name="run", **overrides):
    return make_config(
        "digits", "fast", out=str(tmp_path / name), **{**TINY, "epochs": 3, "keep_epochs": [1, 2], **overrides}
    )


def weights(run_dir):
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = tiny(tmp)
    metrics = pretrain(cfg, progress=False)
    return cfg, tmp / "run", metrics


def test_a_run_writes_every_file(finished_run):
    _cfg, run, metrics = finished_run
    for name in ("config.json", "history.csv", "metrics.json", "checkpoints/last.pt",
                 "checkpoints/epoch_0001.pt", "checkpoints/epoch_0002.pt", "checkpoints/epoch_0003.pt"):
        assert (run / name).is_file(), name
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["epochs"] == 3 and record["provenance"]["torch"] == torch.__version__
    assert "finished" in record["provenance"]
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"loss", "lr", "clusters_used", "images_per_s", "seconds", "cpu_seconds"} <= set(rows[0])
    assert all(float(r["cpu_seconds"]) > 0 for r in rows)  # the process's CPU time, the CPU budget
    assert set(metrics) >= {"nmi", "ami", "ari", "acc", "clusters_used"}
    assert all(0 <= metrics[k] <= 1 for k in ("nmi", "ami", "acc"))
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_training_lowers_the_loss(finished_run):
    _, run, _ = finished_run
    losses = [float(r["loss"]) for r in csv.DictReader((run / "history.csv").open())]
    assert losses[-1] < losses[0]


def test_rerunning_a_finished_run_trains_nothing(finished_run):
    cfg, run, metrics = finished_run
    before, record = weights(run), (run / "config.json").read_bytes()
    assert pretrain(cfg, progress=False) == metrics
    after = weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (run / "config.json").read_bytes() == record


def test_evaluate_and_probe_write_their_reports(finished_run):
    _, run, metrics = finished_run
    evaluation = evaluate_run(run, device="cpu")
    assert [h["head_size"] for h in evaluation.heads] == [10, 20]
    assert evaluation.scored_head == 0 and evaluation.scored["acc"] == pytest.approx(metrics["acc"])
    assert set(evaluation.kmeans_pixels) == {"nmi", "ami", "ari", "acc"}
    assert (run / "eval.json").is_file()
    rows = probe_run(run, all_kept=True, epochs=2, device="cpu")
    assert sorted({(r["probe"], r["epoch"]) for r in rows}) == [
        (p, e) for p in ("knn", "linear") for e in (1, 2, 3)]
    assert all(0 <= r["top1"] <= r["top3"] <= 1 for r in rows)
    assert (run / "probe.csv").is_file()


def test_probing_leaves_backbone_weights_and_bn_statistics_unchanged(finished_run, monkeypatch):
    import shutil

    from sclib.eval import features, probe
    from sclib.run.build import load_data
    from sclib.run.paths import open_run

    _, run, _ = finished_run
    shutil.rmtree(run / "features", ignore_errors=True)  # computed afresh, not read from an earlier test's cache
    before = checkpoint.load(run / "checkpoints" / "epoch_0003.pt")["model"]
    cfg, _ = open_run(run)
    data = load_data(cfg)
    seen = []
    original = features.predict

    def spy(model, *args, **kwargs):
        seen.append(model)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(features, "predict", spy)
    probe.probe_checkpoint(run, data, run / "checkpoints" / "epoch_0003.pt", epochs=2, device="cpu")
    assert len(seen) == 2  # the train and the eval split
    for model in seen:
        after = model.state_dict()
        assert not model.training
        assert all(torch.equal(before[k], after[k]) for k in before), "probe changed the backbone or BN buffers"


def test_interrupted_run_resumes_to_identical_weights(tmp_path, interrupt_at_step):
    straight = tiny(tmp_path, "straight", epochs=2, keep_epochs=[])
    pretrain(straight, progress=False)

    broken = tiny(tmp_path, "broken", epochs=2, keep_epochs=[])
    with pytest.raises(interrupt_at_step(13)):  # mid-way through epoch 2 (9 steps an epoch)
        pretrain(broken, progress=False)
    assert checkpoint.load(tmp_path / "broken" / "checkpoints" / "last.pt")["epoch"] == 1
    pretrain(broken, progress=False)

    a, b = weights(tmp_path / "straight"), weights(tmp_path / "broken")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = list(csv.DictReader((tmp_path / "broken" / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2]


def test_nearest_neighbour_queue_sees_each_batch_with_its_indices_and_resumes(tmp_path, monkeypatch):
    from sclib.core.nnqueue import NNQueue
    from sclib.train import epoch_seed

    pushed = []
    original = NNQueue.push

    def spy(self, z, indices):
        pushed.append(indices.clone())
        original(self, z, indices)

    monkeypatch.setattr(NNQueue, "push", spy)
    cfg = tiny(tmp_path, epochs=1, nn_queue=300)
    pretrain(cfg, progress=False)
    # every step pushes its batch's positions in the training set, in the epoch's order
    order = torch.randperm(1257, generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, 0)))
    assert torch.equal(torch.cat(pushed), order[:len(pushed) * 128])
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["queue"]
    assert state["full"] and state["items"].shape == (300, 16)
    assert torch.equal(state["indices"], torch.cat(pushed)[-300:].roll(state["pointer"]))
    resumed = Trainer.from_config(cfg, progress=False)
    assert resumed.restore() and resumed.queue.full and torch.equal(resumed.queue.indices, state["indices"])


def test_multicrop_views_reach_the_loss(tmp_path):
    cfg = tiny(tmp_path, epochs=1, local_crops=2, local_size=6, augment="byol", global_scale=[0.4, 1.0])
    trainer = Trainer.from_config(cfg, progress=False)
    gen = torch.Generator().manual_seed(0)
    views = trainer.augment(trainer.images[:8], gen)
    assert [tuple(v.shape[-2:]) for v in views] == [(8, 8), (8, 8), (6, 6), (6, 6)]
    loss, logits = trainer.train_step(trainer.images[:8], gen)
    assert torch.isfinite(loss) and logits.shape == (8, 10)


def test_sync_free_step_run_resumes_to_identical_weights(tmp_path, interrupt_at_step):
    """The GPU step (sync-free augmentation, fused SGD), run on a CPU, resumes exactly too."""
    straight = tiny(tmp_path, "straight", epochs=2, keep_epochs=[], step_mode="sync-free")
    pretrain(straight, progress=False)
    broken = tiny(tmp_path, "broken", epochs=2, keep_epochs=[], step_mode="sync-free")
    with pytest.raises(interrupt_at_step(13)):
        pretrain(broken, progress=False)
    pretrain(broken, progress=False)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "broken")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = checkpoint.load(tmp_path / "broken" / "checkpoints" / "last.pt")
    assert all(group["fused"] for group in state["optimizer"]["param_groups"])


class ScriptedClock:
    """A clock that moves only when a step runs, by the seconds the test says that step took, so
    what the estimates are asserted to be never depends on how busy the machine is."""

    def __init__(self, step_seconds):
        self.now, self.step_seconds, self.steps = 0.0, step_seconds, 0

    def __call__(self) -> float:
        return self.now

    def wrap(self, step):
        def timed(*args, **kwargs):
            self.now += self.step_seconds(self.steps)
            self.steps += 1
            return step(*args, **kwargs)
        return timed


@pytest.mark.parametrize("first_step_s,other_steps_s", [(3.0, 0.1), (41.0, 0.5), (0.2, 0.2)],
                         ids=["3 s compile, 0.1 s steps", "41 s compile (the CPU case), 0.5 s steps",
                              "a compile as fast as a step"])
def test_the_duration_estimate_leaves_out_the_compiling_step(tmp_path, monkeypatch, first_step_s, other_steps_s):
    # measured on CPU: torch.compile's first step took 41 s and the estimate then said 43 min
    # for two 85 s epochs; the steps after the compiling one are the ones that repeat
    trainer = Trainer.from_config(tiny(tmp_path, epochs=2, batch_size=64), progress=False)
    trainer.progress.compile_mode = "default"  # time step 1 as a compiling step
    clock = ScriptedClock(lambda step: first_step_s if step == 0 else other_steps_s)
    trainer.progress.clock = clock
    seen = []
    monkeypatch.setattr(trainer, "train_step", clock.wrap(trainer.train_step))
    monkeypatch.setattr(trainer.progress, "estimate", seen.append)
    trainer.train_epoch()
    assert trainer.progress.compile_seconds == pytest.approx(first_step_s)
    assert seen == [pytest.approx(other_steps_s)]  # with the compiling step in it would be the mean of all six


def test_a_long_run_says_how_long_after_its_first_steps_and_how_to_shorten_it(tmp_path, capsys):
    from sclib.run.progress import LONG_RUN_SECONDS, long_run_message

    assert long_run_message(LONG_RUN_SECONDS - 1, 10, "cpu") is None
    text = long_run_message(3 * 3600 + 20 * 60, 100, "cpu")
    assert "about 3 h 20 min" in text and "--epochs" in text and "--preset gpu" in text and "resumed" in text
    # a run whose epochs add up to hours hears it during its first epoch; a short one hears nothing
    for epochs, step_s, said in ((1_000, 1.0, True), (10, 1.0, False)):  # 9 steps an epoch: 2.5 h, 90 s
        trainer = Trainer.from_config(tiny(tmp_path, name=f"run{epochs}", epochs=epochs), progress=False)
        trainer.progress.clock = clock = ScriptedClock(lambda step, s=step_s: s)
        trainer.train_step = clock.wrap(trainer.train_step)
        trainer.train_epoch()
        err = capsys.readouterr().err
        assert ("the 1000 epochs still to do will take about 2 h 30 min" in err) is said, err
        assert ("note: the" in err) is said, err
    Trainer.from_config(tiny(tmp_path, "short", epochs=2), progress=False).train_epoch()
    assert "still to do" not in capsys.readouterr().err


@pytest.mark.parametrize("batch_size, steps", [(1024, 1), (512, 2), (256, 4)])
def test_an_epoch_shorter_than_the_estimate_still_estimates(tmp_path, batch_size, steps):
    """digits' 1257 train images at batch 256 make 4 steps an epoch: the estimate came after step 6,
    so a 1000-epoch run never heard how long it would take."""
    trainer = Trainer.from_config(tiny(tmp_path, epochs=1000, batch_size=batch_size), progress=False)
    assert trainer.steps_per_epoch == steps
    trainer.progress.clock = clock = ScriptedClock(lambda step: 2.0)
    trainer.train_step = clock.wrap(trainer.train_step)
    seen = []
    trainer.progress.estimate = seen.append
    trainer.train_epoch()
    assert seen == [pytest.approx(2.0)]


def test_a_resume_says_from_which_epoch(tmp_path, capsys, interrupt_at_step):
    cfg = tiny(tmp_path, epochs=2, keep_epochs=[])
    with pytest.raises(interrupt_at_step(12)):  # in epoch 2: 9 steps an epoch
        pretrain(cfg, progress="log")
    assert "resuming" not in capsys.readouterr().out  # a fresh start says nothing of the kind
    pretrain(cfg, progress="log")
    assert f"resuming {cfg.out} from epoch 1 of 2" in capsys.readouterr().out


@pytest.mark.parametrize("folder, shown", [("runs/study/run/seed2", "seed2"), ("runs/mine", "mine")])
def test_the_progress_bar_names_the_run_it_trains(folder, shown):
    from sclib.run.progress import Progress

    progress = Progress("bar", folder, 3, 1, "cpu")
    progress.start(0)
    try:
        assert progress.bar.desc == f"pre-training {shown}"
    finally:
        progress.close()


def test_a_probe_cut_short_warns_and_the_protocol_is_not_checked(finished_run, monkeypatch, cli):
    from sclib.eval import probe
    from sclib.run.build import load_data
    from sclib.run.paths import open_run

    _, run, _ = finished_run
    checked = []
    monkeypatch.setattr(probe, "convergence_warning", lambda *args, **kwargs: checked.append(args[5]) or "not yet")
    data = load_data(open_run(run)[0])
    with pytest.warns(probe.ProbeNotConverged, match=r"^run, checkpoint of epoch 3: not yet$"):
        probe.probe_checkpoint(run, data, epochs=5, device="cpu")
    probe.probe_checkpoint(run, data, epochs=probe.PROBE_EPOCHS, device="cpu")
    assert checked == [5]
    result = cli("probe", "--run", run, "--epochs", 5, "--device", "cpu")
    assert result.code == 0 and result.err_lines == ["probe: warning: run, checkpoint of epoch 3: not yet"]


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("step_s, steps, most_redraws", [(0.01, 200, 9), (0.5, 10, 10), (0.001, 1000, 5)],
                         ids=["10 ms steps", "500 ms steps", "1 ms steps"])
def test_the_bar_moves_within_an_epoch_at_most_four_times_a_second(step_s, steps, most_redraws):
    """A 75 s CIFAR-10 epoch showed nothing moving: the bar counts steps, redrawn at most every
    0.25 s of the trainer's clock, and an epoch's end shows the epoch whole."""
    from sclib.run.progress import Progress

    clock, seen = StepClock(), []
    progress = Progress("bar", "runs/x/seed0", 3, steps, "cpu")
    progress.clock = clock
    progress.start(0)
    progress.begin_epoch(0)
    progress.bar.update = lambda n, update=progress.bar.update: (seen.append(n), update(n))
    for _ in range(steps - 1):
        clock.now += step_s
        progress.step()
    assert 0 < progress.bar.n < steps and len(seen) <= most_redraws  # moved inside the epoch, not at every step
    clock.now += step_s
    progress.step()
    progress.epoch_done({"epoch": 1, "loss": 1.5, "lr": 0.1, "images_per_s": 100.0, "clusters_used": 3})
    assert progress.bar.n == steps and progress.bar.total == 3 * steps
    assert progress.bar.postfix.startswith("epoch=2/3")
    progress.close()


def test_a_fit_counts_every_step_and_keeps_one_history_row_an_epoch(tmp_path):
    trainer = Trainer.from_config(tiny(tmp_path, epochs=2), progress="bar")
    trainer.fit()
    bar = trainer.progress.bar
    assert bar.n == bar.total == 2 * trainer.steps_per_epoch
    assert [row["epoch"] for row in trainer.history] == [1, 2]
    assert len(list(csv.DictReader((tmp_path / "run" / "history.csv").open()))) == 2


@pytest.mark.parametrize("mode, stream", [("log", "out"), ("bar", "err")])
def test_the_precision_line_goes_with_the_progress(tmp_path, capsys, mode, stream):
    """In a notebook ("log") the precision line sat on stderr, styled like an error, beside the
    epoch lines on stdout; on a terminal it stays on stderr with the bar."""
    Trainer.from_config(tiny(tmp_path, epochs=1), progress=mode).fit()
    captured = capsys.readouterr()
    assert "precision: " in getattr(captured, stream)
    assert "precision: " not in getattr(captured, "err" if stream == "out" else "out")
