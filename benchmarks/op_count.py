"""Ops launched per training step, by phase: the CPU stand-in for a GPU's kernel launches.

On a GPU each eager aten op is (at least) one kernel launch of a few microseconds of host time,
so a step made of thousands of small ops is bound by the host, not by the GPU. This counts the
top-level aten ops of one ``train_step`` (after a warm-up step) in each phase, for the eager
step, the sync-free step and, with ``--compile``, the compiled sync-free step (where what is left are
the calls inductor did not fuse: convolutions, matmuls and its generated kernels, which show up
here as few top-level ops).

    python benchmarks/op_count.py                       # seed cifar10 recipe, batch 8, CPU
    python benchmarks/op_count.py --setting mnist-small --compile
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sclib.train import PHASES, Trainer


def ops_per_phase(trainer: Trainer) -> Counter[str]:
    """Top-level aten ops of one train_step, by the sclib phase range that holds them."""
    gen = torch.Generator(device=trainer.device).manual_seed(0)
    images = trainer.images[: trainer.global_batch]
    trainer.train_step(images, gen)  # warm-up (and compilation)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step(images, gen)
    counts: Counter[str] = Counter()
    for event in prof.events():
        parent = event.cpu_parent
        if not event.name.startswith("aten::") or (parent is not None and parent.name.startswith("aten::")):
            continue
        while parent is not None and not parent.name.startswith("sclib."):
            parent = parent.cpu_parent
        counts[parent.name[len("sclib."):] if parent is not None else "other"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="cifar10", choices=list(common.SETTINGS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="also count the compiled sync-free step")
    args = parser.parse_args()
    variants = [("eager (before)", False, False), ("sync-free", True, False)]
    if args.compile:
        variants.append(("sync-free + compile", True, True))
    columns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, sync_free, compile in variants:
            trainer = common.recipe_trainer(args.setting, f"{tmp}/{len(columns)}", "cpu", args.batch_size, 2,
                                            step_mode="sync-free" if sync_free else "eager", compile=compile)
            columns[label] = ops_per_phase(trainer)
    about = common.SETTINGS[args.setting].about
    print(f"top-level aten ops per step, {args.setting} ({about}), batch {args.batch_size}")
    print(f"| phase | {' | '.join(columns)} |\n|---|{'---:|' * len(columns)}")
    for phase in (*PHASES, "other"):
        if any(c[phase] for c in columns.values()):
            print(f"| {phase} | {' | '.join(str(c[phase]) for c in columns.values())} |")
    print(f"| **step** | {' | '.join(f'**{sum(c.values())}**' for c in columns.values())} |")


if __name__ == "__main__":
    main()
