"""Precision follows the hardware: bf16 autocast and channels-last on CPUs with native bf16, fp32
elsewhere, recorded in the log and config.json.

A CPU's bf16 support is forced either way by replacing ``sclib.run.build.cpu_has_native_bf16``, so
every test runs on any CPU (PyTorch emulates bf16 where the hardware lacks it: slower, same
numbers).

Tolerance of the bf16 step against fp32 (one step, same weights, same views), measured on this
test's small CNN with 1 and 2 threads: the loss agrees within 1e-3 relative (seen: 4e-4); every
parameter's gradient has a cosine similarity above 0.96 with fp32's (seen: >= 0.980) and a
relative error below 0.3 (seen: <= 0.20); a wrong gradient scores near 0 on both. bf16 keeps 8
bits of mantissa, and the backward pass through five conv blocks and batch norms compounds it;
the heads and the loss run in fp32. Tensors whose exact gradient is zero (the projector's bias in
front of its batch norm) hold only rounding noise and are skipped.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_step import one_step, trainer

from sclib.run import build, checkpoint
from sclib.run.build import Precision, precision
from sclib.run.config import make_config
from sclib.train import Trainer, pretrain


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def old_cpu(monkeypatch):
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: False)


@pytest.mark.parametrize(("device", "amp", "native", "bf16", "channels_last"), [
    ("cpu", True, True, True, True),      # a CPU with AVX512-BF16 or AMX: the fast step
    ("cpu", True, False, False, False),   # an older CPU: fp32 and contiguous, as before
    ("cpu", False, True, False, False),   # --amp false: fp32 on any CPU
    ("cpu", False, False, False, False),
    ("cuda", True, False, True, True),    # CUDA as before: bf16 with --amp, channels-last always
    ("cuda", False, False, False, True),
])
def test_precision_follows_the_device_and_amp(monkeypatch, device, amp, native, bf16, channels_last):
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: native)
    chosen = precision(torch.device(device), amp)
    assert (chosen.bf16, chosen.channels_last) == (bf16, channels_last)
    assert str(chosen).startswith("bf16 autocast" if bf16 else "fp32")


def test_native_bf16_is_what_torch_reports_for_this_cpu():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert build.cpu_has_native_bf16() is expected


def test_the_autocast_context_computes_convolutions_in_bf16_or_not():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    for chosen, dtype in ((Precision(True, True, "test"), torch.bfloat16), (Precision(False, False, "test"),
                                                                              torch.float32)):
        with chosen.autocast(torch.device("cpu")):
            assert conv(x).dtype == dtype


def test_bf16_step_agrees_with_the_fp32_step(tmp_path, bf16_cpu):
    fp32 = trainer(tmp_path, "fp32", amp=False)
    bf16 = trainer(tmp_path, "bf16", amp=True)
    assert bf16.precision.bf16 and not fp32.precision.bf16
    a, b = one_step(fp32), one_step(bf16)
    assert not torch.equal(a[0], b[0]), "the bf16 step computed in fp32"
    torch.testing.assert_close(b[0], a[0], rtol=1e-3, atol=0)
    largest = max(g.norm() for g in a[1].values())
    checked = 0
    for name, grad in a[1].items():
        if grad.norm() < 1e-4 * largest:  # an exact zero in fp32 up to rounding
            continue
        other = b[1][name]
        assert (other - grad).norm() <= 0.3 * grad.norm(), name
        assert torch.nn.functional.cosine_similarity(other.flatten(), grad.flatten(), dim=0) > 0.96, name
        checked += 1
    assert checked >= len(a[1]) - 1


def test_bf16_trainer_keeps_weights_and_views_channels_last(tmp_path, bf16_cpu):
    t = trainer(tmp_path, "bf16")
    convs = [p for p in t.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(p.dtype == torch.float32 for p in t.model.parameters()), "autocast keeps fp32 master weights"


def test_a_cpu_without_native_bf16_runs_the_fp32_step_as_before(tmp_path, old_cpu):
    auto = trainer(tmp_path, "auto", amp=True)
    off = trainer(tmp_path, "off", amp=False)
    assert not auto.precision.bf16 and not auto.precision.channels_last
    assert all(p.is_contiguous() for p in auto.model.parameters())
    a, b = one_step(auto), one_step(off)
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def tiny(tmp_path, name, **overrides):
    values = dict(image_size=8, mlp_hidden=32, mlp_out=16, batch_size=128, heads=[10, 20], device="cpu", epochs=2,
                  keep_epochs=[])
    return make_config("digits", "fast", out=str(tmp_path / name), **{**values, **overrides})


def test_a_bf16_run_resumes_to_bit_identical_weights(tmp_path, bf16_cpu, interrupt_at_step):
    pretrain(tiny(tmp_path, "straight"), progress=False)
    with pytest.raises(interrupt_at_step(13)):  # in epoch two: 9 steps an epoch
        pretrain(tiny(tmp_path, "broken"), progress=False)
    pretrain(tiny(tmp_path, "broken"), progress=False)
    a, b = (checkpoint.load(tmp_path / n / "checkpoints" / "last.pt")["model"] for n in ("straight", "broken"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    fp32 = tiny(tmp_path, "fp32", amp=False)
    pretrain(fp32, progress=False)
    c = checkpoint.load(tmp_path / "fp32" / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a), "bf16 and fp32 runs must differ (else bf16 never ran)"


@pytest.mark.parametrize(("native", "said"), [(True, "bf16 autocast, channels-last"), (False, "fp32, contiguous")])
def test_the_log_and_config_json_say_which_precision_ran(tmp_path, monkeypatch, capsys, native, said):
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: native)
    cfg = tiny(tmp_path, "run", epochs=1)
    Trainer.from_config(cfg, progress="log").fit()
    assert f"precision: {said}" in capsys.readouterr().out  # "log" (notebooks): with the epoch lines on stdout
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["provenance"]["precision"].startswith(said)
