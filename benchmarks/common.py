"""What the benchmark scripts share: trainers built from a data set's seed recipe on synthetic
images, the device's name, FLOPs per image and the compute ceiling, and a host-sync counter.

Not a benchmark itself; ``throughput.py``, ``profile_step.py`` and ``gpu_check.py`` import it.
"""

from __future__ import annotations

import copy
import os
import platform
import time
import traceback
from collections import Counter
from typing import Any, NamedTuple

import torch
from torch.overrides import TorchFunctionMode

from sclib.data import REGISTRY, DatasetInfo, DataSplits
from sclib.run.build import build_parts
from sclib.run.config import make_config
from sclib.train import Trainer


class Setting(NamedTuple):
    """A benchmark setting: a data set's recipe (preset), changed by ``overrides``."""

    dataset: str
    preset: str
    overrides: dict[str, Any]
    about: str


SETTINGS: dict[str, Setting] = {
    "cifar10": Setting("cifar10", "seed", {}, "seed recipe: ResNet-18, 32 px, BYOL views"),
    "cifar10-fast": Setting("cifar10", "fast", {}, "fast (CPU) recipe: small CNN, BYOL views"),
    "mnist": Setting("mnist", "seed", {}, "seed recipe: ResNet-18, 28 px, affine views"),
    "mnist-small": Setting("mnist", "seed", {"backbone": "small"},
                           "seed recipe with the small CNN: 28 px, affine views"),
}
# Dense bf16 tensor-core peaks from the vendor's data sheets (TFLOP/s), for the share of the spec.
SPEC_BF16_TFLOPS = {"H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.0, "A100": 312.0}


def synthetic(n: int, channels: int, size: int, seed: int = 0) -> DataSplits:
    """Uniform noise images: the step's cost does not depend on what the pixels show."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    info = DatasetInfo("synthetic", tuple(str(i) for i in range(10)), channels, size, (0.5,) * channels,
                       (0.25,) * channels)
    return DataSplits(info, images, labels, images[:256], labels[:256])


def recipe_trainer(setting: str, out: str, device: str, batch: int, steps: int, data: DataSplits | None = None,
                   **overrides: Any) -> Trainer:
    """A Trainer with the setting's recipe (a name of SETTINGS, or a data set's seed recipe), whose
    epoch is ``steps`` batches of synthetic images (or ``data``, when given: then an epoch is the
    whole train split). ``overrides`` are Config fields, e.g. ``step_mode="sync-free"``."""
    chosen = SETTINGS.get(setting, Setting(setting, "seed", {}, ""))
    cfg = make_config(chosen.dataset, chosen.preset, out=out, device=device, batch_size=batch, epochs=1,
                      keep_epochs=[], **{**chosen.overrides, **overrides})
    if data is None:
        record = REGISTRY[chosen.dataset]  # the data set's image shape, with nothing read
        data = synthetic(batch * steps, record.channels, record.native_size)
    return Trainer(build_parts(cfg, data), progress=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def flops_per_image(trainer: Trainer, batch: int = 4) -> float:
    """FLOPs of one source image's views through forward and backward (convolutions and matmuls),
    counted by torch's FlopCounterMode on a copy of the model, so the run's weights stay put."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(trainer.model).train()
    images = trainer.images[:batch]
    views = trainer.augment(images, torch.Generator(device=trainer.device).manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        outputs = model(views)
        trainer.loss_fn(outputs).backward()
    return counter.get_total_flops() / batch


def measured_peak_tflops(device: torch.device, seconds: float = 1.0, dtype: torch.dtype | None = None) -> float:
    """Dense matmul throughput this device reaches (default: bf16 on CUDA, float32 on a CPU): the
    ceiling's peak as cuBLAS or the CPU's BLAS actually delivers it, not as the data sheet promises."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        sync(device)
        reps += 10
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def spec_tflops(name: str) -> float | None:
    """The data sheet's dense bf16 peak of a GPU named like ``name``, if known."""
    for key, value in SPEC_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def ceiling_line(name: str, images_per_s: float, flops: float, peak_tflops: float) -> str:
    """One line: the rate as a share of the FLOP ceiling (measured matmul peak, and the spec's)."""
    ceiling = peak_tflops * 1e12 / flops
    line = (f"{images_per_s:,.0f} img/s on {name} = {100 * images_per_s / ceiling:.1f}% of the ceiling "
            f"{ceiling:,.0f} img/s ({flops / 1e9:.3g} GFLOP per image at the measured {peak_tflops:.3g} TFLOP/s)")
    spec = spec_tflops(name)
    if spec:
        line += f"; {100 * images_per_s * flops / (spec * 1e12):.1f}% of the data sheet's {spec:.0f} TFLOP/s"
    return line


# ----------------------------------------------------------------------------------------------
# Host syncs


class HostSyncCounter(TorchFunctionMode):
    """Counts the calls that make the host wait for a GPU (``item``, ``tolist``, ``bool()``,
    ``bincount``, ``nonzero``, boolean-mask indexing, tensors built from host data on a device...)
    with the line that made each, on any device: on a CPU it shows what *would* sync on a GPU.

    On CUDA, ``torch.cuda.set_sync_debug_mode`` sees the real thing (including copies); this
    counter is the CPU stand-in that tests can use.
    """

    NAMES = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "nonzero",
                       "unique", "_unique2", "bincount", "masked_select", "repeat_interleave"})

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.sites.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in self.NAMES or _bool_index(name, args) or _host_data_to_device(name, kwargs):
            self.sites[f"{name} at {_caller()}"] += 1
        return func(*args, **kwargs)


def _bool_index(name: str, args: tuple) -> bool:
    if name not in ("__getitem__", "__setitem__") or len(args) < 2:
        return False
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)


def _host_data_to_device(name: str, kwargs: dict) -> bool:
    return name in ("tensor", "as_tensor") and kwargs.get("device") is not None


def _caller() -> str:
    """The innermost frame outside torch and this module: the line of sclib (or a script) that asked."""
    for frame in reversed(traceback.extract_stack()):
        if f"{os.sep}torch{os.sep}" not in frame.filename and frame.filename != __file__:
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "?"


def count_cuda_syncs(fn) -> Counter[str]:
    """Run ``fn`` with torch's CUDA sync debug mode on; the syncs it reported, by source line."""
    import warnings

    sites: Counter[str] = Counter()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            sites[f"{os.path.basename(w.filename)}:{w.lineno}"] += 1
    return sites
