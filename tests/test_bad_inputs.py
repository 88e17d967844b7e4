"""Bad-input and security matrix: each bad input ends in one clear line, exit 2, nothing written.

| case (test id)                              | through                       | the one line names / must hold         |
|---------------------------------------------|-------------------------------|----------------------------------------|
| unknown data set                            | CLI, papermill, subprocess    | dataset                                |
| missing data offline (MNIST, CIFAR-10)      | CLI                           | the expected files and --download      |
| ImageFolder: no images / one class /        | CLI                           | the folder or file, what to do         |
| unreadable file / no data_root              |                               |                                        |
| data_root that is a file                    | CLI                           | data_root                              |
| wrong types (epochs="ten", epochs=2.5, ...) | CLI, papermill, subprocess    | the parameter                          |
| zero / negative / infinite epochs, batch    | CLI, papermill                | the parameter                          |
| size, temperatures, lr                      |                               |                                        |
| empty heads, a head of fewer than 2 classes | CLI, papermill                | heads                                  |
| device=cuda with no GPU                     | CLI, papermill                | cuda                                   |
| unknown preset / parameter, argparse misuse | CLI, papermill                | the flag                               |
| out that is a file                          | CLI                           | out                                    |
| run folder made with a different config     | CLI                           | what differs; folder byte-identical    |
| checkpoint from another architecture        | CLI evaluate, CLI resume      | the checkpoint                         |
| evaluate a folder that is not a run         | CLI                           | config.json                            |
| crafted pickle in last.pt (zip, plain)      | checkpoint.load, resume, eval | refused; the payload never runs        |
| crafted pickle in a CIFAR batch file        | load_dataset                  | refused by a restricted unpickler, not |
|                                             |                               | executed                               |
| tampered download (5 data sets)             | load_dataset(download=True)   | torchvision's md5 rejects it before    |
|                                             |                               | extraction                             |

"Nothing written": the CLI cases check the --out folder was never created (or, for an existing
run folder, that every file is byte-identical).
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from sclib.run import checkpoint
from sclib.run.config import ConfigError, make_config

# -- helpers -----------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_error_line(result, *names: str) -> str:
    assert result.code == 2, result
    assert len(result.err_lines) == 1, result.err_lines
    line = result.err_lines[0]
    assert line.startswith("sclib: error:"), line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    assert result.out == ""
    return line


def write_png(path: Path, value: int = 128, size: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), value).save(path)


def image_folder(root: Path, kind: str) -> Path:
    """A tiny ImageFolder with one defect."""
    classes = ["a"] if kind == "one class" else ["a", "b"]
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            if kind != "no images":
                write_png(root / split / c / "0.png", value=40 if c == "a" else 200)
    if kind == "unreadable file":
        (root / "train" / "b" / "1.png").write_bytes(b"this is not a png")
    return root


class Payload:
    """A pickle that, if unpickled, creates a marker file (stands for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoint(path: Path, marker: Path, style: str) -> Path:
    state = {"model": {}, "epoch": 1, "evil": Payload(marker)}
    if style == "torch.save (zip)":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    return path


# -- bad CLI parameters ------------------------------------------------------------------------

CLI_CASES = {
    # id: (extra pretrain args, substrings the one line must contain)
    "unknown data set": (["--dataset", "svhn"], ["dataset", "svhn"]),
    "epochs=ten (wrong type)": (["--epochs", "ten"], ["epochs", "ten"]),
    "epochs=2.5 (wrong type)": (["--epochs", "2.5"], ["epochs"]),
    "epochs=0": (["--epochs", "0"], ["epochs"]),
    "epochs=-1": (["--epochs", "-1"], ["epochs"]),
    "batch size 0": (["--batch-size", "0"], ["batch_size"]),
    "batch size -8": (["--batch-size", "-8"], ["batch_size"]),
    "batch size 1": (["--batch-size", "1"], ["batch_size"]),
    "row_tau=0": (["--row-tau", "0"], ["row_tau"]),
    "col_tau=-0.05": (["--col-tau", "-0.05"], ["col_tau"]),
    "lr=0": (["--lr", "0"], ["lr"]),
    "lr=-0.1": (["--lr", "-0.1"], ["lr"]),
    "lr=inf": (["--lr", "inf"], ["lr"]),
    "empty heads": (["--heads", ""], ["heads"]),
    "heads flag without values": (["--heads"], ["--heads"]),
    "a head of 1 class": (["--heads", "1", "10"], ["heads", "[1]"]),
    "global_scale low > high": (["--global-scale", "0.8", "0.2"], ["global_scale"]),
    "unknown preset": (["--preset", "slow"], ["--preset", "slow"]),
    "unknown flag": (["--epoks", "3"], ["--epoks"]),
    "imagefolder without data_root": (["--dataset", "imagefolder"], ["data_root"]),
}


@pytest.mark.parametrize("args,names", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_bad_parameter_is_one_line_and_writes_nothing(cli, tmp_path, args, names):
    out = tmp_path / "out"
    result = cli("pretrain", "--device", "cpu", "--out", out, *args)
    assert_one_error_line(result, *names)
    assert not out.exists()


def test_device_cuda_without_a_gpu(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    assert_one_error_line(cli("pretrain", "--device", "cuda", "--out", out), "cuda", "--device cpu")
    assert not out.exists()


# -- bad data ----------------------------------------------------------------------------------

def _missing(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "data.txt").write_text("not a folder")
    return tmp_path / "data.txt"


DATA_CASES = {
    # id: (data set, make data_root, substrings the one line must contain)
    "missing data offline (MNIST)": ("mnist", _missing, ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                                         "--download"]),
    "missing data offline (CIFAR-10)": ("cifar10", _missing, ["data_batch_1", "test_batch", "--download"]),
    "data_root that is a file": ("mnist", _a_file, ["data_root", "data.txt", "is a file"]),
    "ImageFolder with no images": ("imagefolder", lambda t: image_folder(t / "imgs", "no images"),
                                   ["holds no images"]),
    "ImageFolder with one class": ("imagefolder", lambda t: image_folder(t / "imgs", "one class"),
                                   ["one class", "at least two"]),
    "ImageFolder with an unreadable file": ("imagefolder", lambda t: image_folder(t / "imgs", "unreadable file"),
                                            ["1.png", "Remove or replace"]),
    "ImageFolder data_root that is a file": ("imagefolder", _a_file, ["data_root", "is a file"]),
}


@pytest.mark.parametrize("dataset,make_root,names", DATA_CASES.values(), ids=DATA_CASES.keys())
def test_bad_data_is_one_line_and_writes_nothing(cli, tmp_path, dataset, make_root, names):
    root = make_root(tmp_path)
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    result = cli("pretrain", "--dataset", dataset, "--data-root", root, "--device", "cpu", "--image-size", "8",
                 "--out", out)
    assert_one_error_line(result, *names)
    assert not out.exists()
    assert snapshot(tmp_path) == before  # not even in the data folder


# -- the same values as papermill parameters ---------------------------------------------------

PAPERMILL_CASES = {
    # id: (make_config kwargs, substring of the ConfigError)
    "dataset='svhn'": ({"dataset": "svhn"}, "svhn"),
    "preset='slow'": ({"preset_name": "slow"}, "preset"),
    "epochs='ten'": ({"epochs": "ten"}, "epochs"),
    "epochs=2.5": ({"epochs": 2.5}, "epochs"),
    "epochs='0'": ({"epochs": "0"}, "epochs"),
    "epochs=-3": ({"epochs": -3}, "epochs"),
    "batch_size=0": ({"batch_size": 0}, "batch_size"),
    "batch_size='-8'": ({"batch_size": "-8"}, "batch_size"),
    "row_tau=0": ({"row_tau": 0}, "row_tau"),
    "col_tau='-0.05'": ({"col_tau": "-0.05"}, "col_tau"),
    "lr=0": ({"lr": 0}, "lr"),
    "lr='-0.1'": ({"lr": "-0.1"}, "lr"),
    "lr='fast'": ({"lr": "fast"}, "lr"),
    "lr='nan'": ({"lr": "nan"}, "lr"),
    "heads=[]": ({"heads": []}, "heads"),
    "heads='[]'": ({"heads": "[]"}, "heads"),
    "heads=[1, 10]": ({"heads": [1, 10]}, "heads"),
    "heads='1,10'": ({"heads": "1,10"}, "heads"),
    "heads=10 (not a list)": ({"heads": 10}, "heads"),
    "amp='maybe'": ({"amp": "maybe"}, "amp"),
    "epoch=3 (unknown parameter)": ({"epoch": 3}, "epoch"),
    "imagefolder without data_root": ({"dataset": "imagefolder"}, "data_root"),
}


@pytest.mark.parametrize("params,name", PAPERMILL_CASES.values(), ids=PAPERMILL_CASES.keys())
def test_bad_papermill_parameter_names_the_parameter(params, name):
    params = dict(params)
    dataset, preset_name = params.pop("dataset", "digits"), params.pop("preset_name", "fast")
    with pytest.raises(ConfigError) as err:
        make_config(dataset, preset_name, **params)
    assert name in str(err.value)
    assert "\n" not in str(err.value)


def test_papermill_device_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device 'cuda'.*no CUDA GPU"):
        make_config("digits", "fast", device="cuda")


def test_papermill_good_values_still_pass():
    """The same coercions accept well-formed strings, so the cases above fail for their value."""
    cfg = make_config("digits", "fast", epochs="3", lr="0.2", heads="10,20", amp="false", batch_size=64)
    assert (cfg.epochs, cfg.lr, cfg.heads, cfg.amp, cfg.batch_size) == (3, 0.2, [10, 20], False, 64)


# -- a few through a real subprocess: exit status and stderr as a shell sees them ---------------

SUBPROCESS_CASES = {
    "unknown data set": (["--dataset", "svhn"], "svhn"),
    "epochs=ten (wrong type)": (["--epochs", "ten"], "epochs"),
}


@pytest.mark.parametrize("args,name", SUBPROCESS_CASES.values(), ids=SUBPROCESS_CASES.keys())
def test_bad_parameter_in_a_real_process(run_sclib, tmp_path, args, name):
    out = tmp_path / "out"
    proc = run_sclib("pretrain", "--out", str(out), *args, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("sclib: error:") and name in lines[0]
    assert proc.stdout == "" and not out.exists()


# -- existing run folders ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_args) -> Path:
    """A real one-epoch run folder."""
    from sclib.cli import main

    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["pretrain", *tiny_args, "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


def test_run_folder_made_with_a_different_config_is_refused(cli, run_copy, tiny_args):
    before = snapshot(run_copy)
    result = cli("pretrain", *tiny_args, "--epochs", "2", "--lr", "0.2", "--out", run_copy)
    assert_one_error_line(result, "different config", "epochs 1 -> 2", "lr 0.4 -> 0.2", str(run_copy))
    assert snapshot(run_copy) == before


def test_out_that_is_a_file_is_refused(cli, tmp_path, tiny_args):
    out = tmp_path / "out"
    out.write_text("a file")
    assert_one_error_line(cli("pretrain", *tiny_args, "--epochs", "1", "--out", out), "out", "is a file")
    assert out.read_text() == "a file"


def other_architecture_state(tiny_args_heads=(10, 30)) -> dict:
    from sclib.core.optim import build_optimizer
    from sclib.data import load_dataset
    from sclib.run.build import build_model

    cfg = make_config("digits", "fast", image_size=8, mlp_hidden=64, mlp_out=16, heads=list(tiny_args_heads))
    model = build_model(cfg, load_dataset("digits").info)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1, "step": 9,
            "history": [], "config": cfg.to_dict(), "queue": None}


def test_evaluating_a_checkpoint_of_another_architecture_is_refused(cli, run_copy, tmp_path):
    other = checkpoint.save(tmp_path / "other.pt", other_architecture_state())
    before = snapshot(run_copy)
    result = cli("evaluate", "--run", run_copy, "--checkpoint", other, "--device", "cpu")
    assert_one_error_line(result, str(other), "does not fit the architecture", "heads [10, 20]")
    assert snapshot(run_copy) == before


def test_resuming_from_a_checkpoint_of_another_architecture_is_refused(cli, run_copy, tiny_args):
    for path in (run_copy / "checkpoints").glob("*.pt"):
        checkpoint.save(path, other_architecture_state())
    (run_copy / "metrics.json").unlink()  # so the rerun really resumes instead of reporting "complete"
    before = snapshot(run_copy)
    result = cli("pretrain", *tiny_args, "--epochs", "1", "--no-progress", "--out", run_copy)
    assert_one_error_line(result, "last.pt", "architecture")
    assert snapshot(run_copy) == before


def test_evaluating_a_folder_that_is_not_a_run(cli, tmp_path):
    assert_one_error_line(cli("evaluate", "--run", tmp_path / "nothing", "--device", "cpu"), "config.json")
    assert not (tmp_path / "nothing").exists()


def test_probe_with_zero_epochs(cli, run_copy):
    before = snapshot(run_copy)
    assert_one_error_line(cli("probe", "--run", run_copy, "--epochs", "0", "--device", "cpu"), "--epochs")
    assert snapshot(run_copy) == before


# -- security: checkpoints never run code --------------------------------------------------------

PICKLE_STYLES = ["torch.save (zip)", "plain pickle"]


@pytest.mark.parametrize("style", PICKLE_STYLES)
def test_crafted_pickle_checkpoint_is_refused_and_not_executed(tmp_path, style):
    marker = tmp_path / "pwned"
    evil = crafted_checkpoint(tmp_path / "last.pt", marker, style)
    with pytest.raises(checkpoint.CheckpointError, match="refused") as err:
        checkpoint.load(evil)
    assert str(evil) in str(err.value)
    assert not marker.exists()
    # the payload is live: an unrestricted load does run it (so the assertion above can fail)
    live = tmp_path / "live"
    again = crafted_checkpoint(tmp_path / "again.pt", live, style)
    if style == "plain pickle":
        pickle.loads(again.read_bytes())
    else:
        torch.load(again, weights_only=False)
    assert live.exists()


@pytest.mark.parametrize("style", PICKLE_STYLES)
def test_crafted_pickle_checkpoint_is_refused_on_resume_and_evaluate(cli, run_copy, tiny_args, tmp_path, style):
    marker = tmp_path / "pwned"
    for path in (run_copy / "checkpoints").glob("*.pt"):
        crafted_checkpoint(path, marker, style)
    (run_copy / "metrics.json").unlink()
    before = snapshot(run_copy)
    result = cli("pretrain", *tiny_args, "--epochs", "1", "--no-progress", "--out", run_copy)
    errors = [line for line in result.err_lines if line.startswith("sclib: error:")]
    assert result.code == 2 and len(errors) == 1 and "no intact checkpoint" in errors[0]
    assert any("refused" in line and "last.pt" in line for line in result.err_lines)
    result = cli("evaluate", "--run", run_copy, "--checkpoint", run_copy / "checkpoints" / "last.pt")
    assert_one_error_line(result, "last.pt", "refused")
    assert not marker.exists()
    assert snapshot(run_copy) == before


# -- security: data files ----------------------------------------------------------------------

def test_crafted_cifar_pickle_is_refused_and_not_executed(tmp_path):
    from sclib.data import DataError, load_dataset

    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {"data": __import__("numpy").zeros((2, 3072), dtype="uint8"), "labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)],
                                                        "evil": Payload(marker)}))
    try:
        with pytest.raises(DataError, match=r"batches.meta"):
            load_dataset("cifar10", tmp_path)
    finally:
        assert not marker.exists(), "loading a CIFAR file ran code it carried"


def _tampered_archive(filename: str) -> bytes:
    """A well-formed archive that would extract a file, but not the official bytes."""
    if filename.endswith((".tar.gz", ".tgz")):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("extracted.txt")
            info.size = 7
            tar.addfile(info, io.BytesIO(b"payload"))
        return buffer.getvalue()
    return gzip.compress(b"payload")


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10", "cifar20", "stl10"])
def test_tampered_download_is_rejected_by_checksum_before_extraction(tmp_path, monkeypatch, dataset):
    from torchvision.datasets import utils

    from sclib.data import DataError, load_dataset

    fetched = []

    def fake_urlretrieve(url, filename, *args, **kwargs):  # the network, serving a tampered file
        fetched.append(Path(filename))
        Path(filename).write_bytes(_tampered_archive(str(filename)))

    monkeypatch.setattr(utils, "_urlretrieve", fake_urlretrieve)
    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_is_remote_location_available", lambda: False)
    monkeypatch.setenv("SCLIB_FASHION_MNIST_DIR", str(tmp_path / "no-system-copy"))
    root = tmp_path / "data"
    with pytest.raises(DataError, match="corrupted"):
        load_dataset(dataset, root, download=True)
    assert fetched, "the download did not go through torchvision"
    assert {p for p in root.rglob("*") if p.is_file()} <= set(fetched), "something was extracted"
