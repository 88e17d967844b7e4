"""The backbone candidates for CIFAR on this CPU, side by side in one run (issue 25).

For each candidate (a name of ``sclib.core.model.BACKBONES`` at a width) the fast CIFAR-10 recipe's
whole training step, as a run takes it: augmentation of 2 BYOL views of 32 px, forward,
loss, backward and SGD, under the run's precision (bf16 autocast + channels-last on a CPU with
native bf16), batch 128 by default, on synthetic images. Prints per candidate:

* forward MMAC (multiply-accumulates) per view and GFLOP per source image of the whole step
  (forward + backward of both views, counted by ``torch.utils.flop_counter``);
* img/s (source images, each making both views) as the median of ``--repeats`` timings of
  ``--steps`` steps after a warm-up;
* the achieved rate in GFLOP/s and its share of the dense matmul rate measured at the start of
  the same run (``common.measured_peak_tflops``, a 1024 x 1024 matmul) in the step's precision:
  bf16 on a CPU with native bf16 (AMX on the Intel Xeon), fp32 elsewhere.

The machine's speed drifts (2x within minutes on the shared 2-core machine), so the candidates
are timed interleaved, round by round, and the baseline (``small`` at width 16, today's recipe)
is in every round: read the ratio column, not the absolute img/s.

    PYTHONPATH=. python benchmarks/networks.py                     # every candidate, threads as set
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/networks.py   # one core, as seeds run side by side
    PYTHONPATH=. python benchmarks/networks.py --candidates small:16 wide_late:32 --steps 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sclib.run.build import cpu_has_native_bf16
from sclib.train import Trainer

# name:width of every candidate; the first is the baseline of the ratio column.
CANDIDATES = ["small:16", "small:24", "small:32", "stride2_stem:32", "wide_late:32", "small_resnet:16",
              "small_resnet:24", "airbench:16", "airbench:32"]


def forward_macs_per_view(trainer: Trainer) -> float:
    """Multiply-accumulates of the backbone + projector + heads forward for one 32 px view (eval shapes)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(trainer.model).eval()
    size = trainer.cfg.image_size
    x = torch.zeros(2, trainer.info.channels, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 2  # FLOPs count a MAC as 2


def time_steps(trainer: Trainer, steps: int) -> float:
    """Source images per second over ``steps`` whole training steps."""
    gen = torch.Generator().manual_seed(0)
    batch = trainer.global_batch
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.arange(step * batch, (step + 1) * batch) % len(trainer.images)
        trainer.train_step(trainer.images[idx], gen, idx)
    return steps * batch / (time.perf_counter() - start)


def parse(candidate: str) -> tuple[str, int]:
    name, _, width = candidate.partition(":")
    if not width.isdigit():
        raise SystemExit(f"networks: candidate {candidate!r} is not NAME:WIDTH (e.g. small:16)")
    return name, int(width)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES, help="NAME:WIDTH, the first is the baseline")
    parser.add_argument("--batch-size", type=int, default=128, help="the CIFAR recipes' batch")
    parser.add_argument("--steps", type=int, default=10, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (the median is printed)")
    args = parser.parse_args(argv)
    candidates = [parse(c) for c in args.candidates]
    cpu = torch.device("cpu")
    # the rate of the precision the step runs in: bf16 where the CPU multiplies it natively (AMX,
    # AVX512-BF16), fp32 elsewhere (an emulated bf16 matmul runs ~100x below the fp32 one)
    matmul = "bf16" if cpu_has_native_bf16() else "fp32"
    peak = common.measured_peak_tflops(cpu, dtype=torch.bfloat16 if matmul == "bf16" else torch.float32)
    print(f"torch {torch.__version__}; {common.device_name(cpu)}; measured dense {matmul} matmul rate "
          f"{peak:.3g} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainers, macs, flops = [], [], []
        for i, (name, width) in enumerate(candidates):
            trainer = common.recipe_trainer("cifar10-fast", f"{tmp}/{i}", "cpu", args.batch_size, args.steps + 2,
                                            backbone=name, small_width=width)
            trainers.append(trainer)
            macs.append(forward_macs_per_view(trainer))
            flops.append(common.flops_per_image(trainer))
            time_steps(trainer, 2)  # warm-up: allocations, oneDNN primitive caches
        print(f"precision: {trainers[0].precision}; batch {args.batch_size} x 2 views of 32 px; "
              f"{args.steps} steps a timing, median of {args.repeats} interleaved rounds", flush=True)
        rates: list[list[float]] = [[] for _ in candidates]
        for _ in range(args.repeats):
            for trainer, rate in zip(trainers, rates):
                rate.append(time_steps(trainer, args.steps))
    print()
    print("| backbone | width | forward MMAC / view | step GFLOP / image | img/s | x baseline | GFLOP/s | "
          f"share of {matmul} matmul rate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(rates[0])
    for (name, width), mac, flop, rate in zip(candidates, macs, flops, rates):
        speed = statistics.median(rate)
        achieved = speed * flop / 1e9
        print(f"| {name} | {width} | {mac / 1e6:.1f} | {flop / 1e9:.3f} | {speed:,.0f} | {speed / base:.2f} | "
              f"{achieved:,.0f} | {100 * achieved / (peak * 1e3):.1f} % |")


if __name__ == "__main__":
    main()
