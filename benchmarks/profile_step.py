"""Where a training step's time goes: data, augmentation, forward, loss, backward, optimiser,
collectives and host syncs, from a few real steps of ``Trainer.train_epoch`` under torch.profiler.

    python benchmarks/profile_step.py --device cpu --batch-size 64 --steps 4     # the CPU table in README
    python benchmarks/profile_step.py --device cuda                              # seed recipe, batch 512
    python benchmarks/profile_step.py --device cuda --compile --compile-mode reduce-overhead

The trainer's step opens a ``torch.profiler.record_function`` range per phase ("sclib.augment",
...; see ``sclib.train.PHASES``). Three passes over the same few steps, after one warm-up pass:

* timeline: when each phase ended, by ``perf_counter`` on a CPU and by CUDA events on a GPU, so a
  phase's share is its share of the device's timeline (idle gaps included, which is what a
  host sync costs);
* torch.profiler: the host time spent inside each range, and the ops that cost most;
* host syncs: on CUDA ``torch.cuda.set_sync_debug_mode`` counts every sync with the line that made
  it; on a CPU, where nothing syncs, ``common.HostSyncCounter`` counts the calls that would.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sclib import train
from sclib.run.config import STEP_MODES
from sclib.train import PHASES, Trainer


@dataclass
class StepProfile:
    """Per-step figures of a few profiled steps."""

    steps: int
    step_ms: float                                                   # wall time of a step, unprofiled
    timeline_ms: dict[str, float] = field(default_factory=dict)      # phase -> device-timeline ms
    host_ms: dict[str, float] = field(default_factory=dict)          # range -> host ms inside it
    syncs: Counter[str] = field(default_factory=Counter)             # "what at file:line" -> count
    top_ops: list[tuple[str, float]] = field(default_factory=list)   # (op, ms per step)
    sync_kind: str = ""


def timeline(trainer: Trainer) -> tuple[dict[str, float], float]:
    """Run one epoch noting when each phase ends; ms per step of each phase, and of the step.

    The marks ride on the step's own profiler ranges: ``sclib.train.phase`` is wrapped here for
    the one epoch, so the trainer carries no benchmark hook.
    """
    device, steps = trainer.device, trainer.steps_per_epoch
    marks: list[tuple[str, object]] = []

    def mark(name: str) -> None:
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            marks.append((name, event))
        else:
            marks.append((name, time.perf_counter()))

    ranged = train.phase

    @contextlib.contextmanager
    def marked(name: str) -> Iterator[None]:
        with ranged(name):
            yield
        mark(name)

    train.phase = marked
    try:
        common.sync(device)
        mark("start")
        row = trainer.train_epoch()
        common.sync(device)
    finally:
        train.phase = ranged
    spent: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    for (_, before), (name, after) in itertools.pairwise(marks):
        ms = before.elapsed_time(after) if device.type == "cuda" else 1e3 * (after - before)
        spent[name] += ms / steps
    return spent, 1e3 * row["seconds"] / steps


def host_profile(trainer: Trainer, top: int = 8) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """torch.profiler over one epoch: host ms per step inside each sclib range, and the costliest ops
    (by self device time on CUDA, self CPU time on a CPU)."""
    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        trainer.train_epoch()
        common.sync(trainer.device)
    steps = trainer.steps_per_epoch
    events = prof.key_averages()
    host = {e.key[len("sclib."):]: e.cpu_time_total / 1e3 / steps for e in events if e.key.startswith("sclib.")}

    def self_time(e) -> float:
        if cuda:
            return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
        return e.self_cpu_time_total

    ops = sorted((e for e in events if not e.key.startswith("sclib.")), key=self_time, reverse=True)
    return host, [(e.key, self_time(e) / 1e3 / steps) for e in ops[:top]]


def host_syncs(trainer: Trainer) -> tuple[Counter[str], str]:
    """Host syncs in one epoch, by site: real ones on CUDA, would-be ones on a CPU."""
    if trainer.device.type == "cuda":
        return common.count_cuda_syncs(trainer.train_epoch), "CUDA syncs (torch.cuda.set_sync_debug_mode)"
    with common.HostSyncCounter() as counter:
        trainer.train_epoch()
    return counter.sites, "calls that would sync on a GPU (common.HostSyncCounter)"


def profile_trainer(trainer: Trainer) -> StepProfile:
    """Warm up (compilation, allocator) with one epoch, then the three passes."""
    trainer.train_epoch()
    spent, step_ms = timeline(trainer)
    host, top = host_profile(trainer)
    syncs, kind = host_syncs(trainer)
    return StepProfile(trainer.steps_per_epoch, step_ms, spent, host, syncs, top, kind)


def format_table(p: StepProfile, title: str) -> str:
    """The profile as a short plain-text table (Markdown-friendly)."""
    timeline_total = sum(p.timeline_ms.values()) or 1.0
    lines = [title, "",
             "| phase | host ms/step | timeline ms/step | share of timeline |",
             "|---|---:|---:|---:|"]
    for phase in PHASES:
        lines.append(f"| {phase} | {p.host_ms.get(phase, 0.0):.2f} | {p.timeline_ms.get(phase, 0.0):.2f} | "
                     f"{100 * p.timeline_ms.get(phase, 0.0) / timeline_total:.1f}% |")
    lines.append(f"| of which collectives (in loss, backward) | {p.host_ms.get('collective', 0.0):.2f} | | |")
    lines.append(f"| **step (wall, unprofiled)** | | **{p.step_ms:.2f}** | |")
    per_step = sum(p.syncs.values()) / p.steps
    sites = ", ".join(f"{site} x{n}" for site, n in p.syncs.most_common(4)) or "none"
    lines += ["", f"host syncs: {per_step:.1f} per step over {p.steps} steps ({p.sync_kind}); sites: {sites}",
              "costliest ops (self time, ms/step): " + ", ".join(f"{name} {ms:.2f}" for name, ms in p.top_ops)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="cifar10", choices=list(common.SETTINGS))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="profiled steps (default: 10 on CUDA, 3 on CPU)")
    parser.add_argument("--step-mode", choices=STEP_MODES, default="auto",
                        help="the training step (Config step_mode); auto: sync-free on CUDA only, as in training")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode", default="default")
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    batch = args.batch_size or (512 if cuda else 64)
    steps = args.steps or (10 if cuda else 3)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = common.recipe_trainer(args.setting, tmp, device, batch, steps, step_mode=args.step_mode,
                                        compile=args.compile, compile_mode=args.compile_mode)
        result = profile_trainer(trainer)
    name = common.device_name(trainer.device)
    compiled = f", compiled {args.compile_mode}" if args.compile else ""
    title = (f"{args.setting} ({common.SETTINGS[args.setting].about}), batch {batch}, "
             f"{len(trainer.augment.specs())} views, {'sync-free' if trainer.sync_free else 'eager'} step{compiled}, "
             f"on {name}, torch {torch.__version__}")
    print(format_table(result, title))


if __name__ == "__main__":
    main()
