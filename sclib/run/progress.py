"""What a training run tells its user while it trains, and the clock it reads.

One object per run (:class:`Progress`): the progress bar or log lines, the epoch's wall and CPU
time, the early estimate of how long the run will take, and the cost of a compiled run's first
step. The trainer only calls :meth:`Progress.begin_epoch`, :meth:`Progress.step` and
:meth:`Progress.end_epoch`, so its epoch reads as a training loop and nothing here changes what
the run computes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sclib.core import distributed

# After this many steps of the first epoch a run estimates the time it will take.
ESTIMATE_AFTER_STEPS = 5
LONG_RUN_SECONDS = 15 * 60
MODES = ("bar", "log", "off")


def long_run_message(seconds: float, epochs: int, device: str) -> str | None:
    """What a user should hear before a long run: the estimate and how to shorten it (None if short).

    Nothing is refused; a run of hours may be exactly what was meant.
    """
    if seconds < LONG_RUN_SECONDS:
        return None
    hours, minutes = divmod(round(seconds / 60), 60)
    took = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    shorter = ("fewer --epochs, a smaller --image-size or --small-width, or a GPU (--preset gpu)"
               if device == "cpu" else "fewer --epochs or a smaller --image-size")
    return (f"note: the {epochs} epochs still to do will take about {took} on this {device} (measured on the "
            f"first steps); to shorten the run: {shorter}. It can be stopped and resumed at any time.")


def progress_mode(progress: bool | str) -> str:
    """``progress`` as one of MODES: True is "bar", False "off"; only the main process shows any."""
    mode = {True: "bar", False: "off"}.get(progress, progress)
    if mode not in MODES:
        raise ValueError(f"progress must be one of {', '.join(MODES)} (or True / False), got {progress!r}")
    return mode if distributed.is_main_process() else "off"


class Progress:
    """A run's progress: a tqdm bar ("bar"), a few plain lines ("log", for notebooks and logs), or
    nothing ("off"); with every mode, the epoch timing, the early estimate and the compile note.

    The bar counts steps, not epochs: a 75 s CIFAR-10 epoch showed nothing moving. It is redrawn
    at most every ``interval`` seconds, so a step costs a counter and a clock reading, never a
    write to the terminal. ``clock`` (seconds) is ``time.perf_counter``; tests put a scripted one
    on the instance, so what they assert about the estimates never depends on a busy machine.
    ``compile_mode``: the torch.compile mode of a compiled run (None: eager), whose first step is
    timed apart; ``synchronize`` waits for the device before that step is timed (CUDA).
    """

    clock: Callable[[], float] = staticmethod(time.perf_counter)
    interval = 0.25

    def __init__(self, mode: bool | str, name: str, epochs: int, steps_per_epoch: int, device: str,
                 compile_mode: str | None = None, synchronize: Callable[[], Any] | None = None) -> None:
        self.mode, self.name, self.epochs, self.steps = progress_mode(mode), name, epochs, steps_per_epoch
        self.device, self.compile_mode, self.synchronize = device, compile_mode, synchronize
        self.every = max(1, epochs // 10)
        self.estimated = False  # the estimate comes once, in the first epoch this process trains
        self.compile_seconds: float | None = None
        self.bar = None
        self.epoch = self.step_in_epoch = 0
        self.began = self.cpu_began = self.shown_at = 0.0
        self.pending = 0

    # -- messages ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """A note or warning: on stderr, from the main process only."""
        if distributed.is_main_process():
            print(message, file=sys.stderr)

    def say(self, message: str) -> None:
        """A line of progress: on stdout with the epoch lines in "log" mode (a notebook showed the
        precision line on stderr, styled as an error), on stderr beside the bar; nothing when off."""
        if self.mode == "log":
            print(message, flush=True)
        elif self.mode == "bar":
            self.log(message)

    # -- the run ----------------------------------------------------------------------------
    def start(self, epoch: int) -> None:
        """Training starts (or resumes) at ``epoch``: the bar appears there."""
        from tqdm import tqdm  # the terminal bar: tqdm.auto warns in notebooks, where mode is "log"

        # the run folder's name (seed0, seed1, ...) says which seed of a study is training
        self.bar = tqdm(total=self.epochs * self.steps, initial=epoch * self.steps,
                        desc=f"pre-training {Path(self.name).name}", unit="step", dynamic_ncols=True,
                        mininterval=self.interval, disable=self.mode != "bar")
        self.bar.set_postfix(epoch=f"{epoch + 1}/{self.epochs}")
        self.shown_at = self.clock()

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.step_in_epoch = epoch, 0
        self.began, self.cpu_began = self.clock(), time.process_time()

    def step(self) -> None:
        """One training step done: time a compiled first step, estimate early, move the bar."""
        self.step_in_epoch += 1
        if self.compile_mode and self.compile_seconds is None:
            self._time_compile()
        # after a few steps, or at the end of an epoch shorter than that (a small data set)
        if not self.estimated and self.step_in_epoch == min(ESTIMATE_AFTER_STEPS, self.steps - 1) + 1:
            # the compiling step says nothing about the others: leave it out of the estimate
            compiling = self.compile_seconds or 0.0
            steps = self.step_in_epoch - (compiling > 0)
            self.estimate((self.clock() - self.began - compiling) / max(steps, 1))
        if self.bar is not None and not self.bar.disable:
            self.pending += 1
            now = self.clock()
            if now - self.shown_at >= self.interval:
                self._flush(now)

    def end_epoch(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) of the epoch that just ended. CPU seconds are user + system
        time of this process over all its threads: the budget on a CPU, where two threads give
        only 1.2-1.3x one and seeds run side by side one thread each."""
        return self.clock() - self.began, time.process_time() - self.cpu_began

    def epoch_done(self, row: dict[str, Any]) -> None:
        """An epoch's history row is in: the bar at its last step, with the epoch's loss; in "log"
        mode a line every tenth of the run."""
        epoch = row["epoch"]
        if self.bar is not None and not self.bar.disable:
            self.pending = epoch * self.steps - self.bar.n
            self._flush(self.clock())
            self.bar.set_postfix(epoch=f"{min(epoch + 1, self.epochs)}/{self.epochs}", loss=f"{row['loss']:.4f}",
                                 lr=f"{row['lr']:.3g}", img_s=f"{row['images_per_s']:.0f}")
        if self.mode == "log" and (epoch % self.every == 0 or epoch in (1, self.epochs)):
            print(f"{self.name}: epoch {epoch}/{self.epochs}  loss {row['loss']:.4f}  "
                  f"clusters {row['clusters_used']}  {row['images_per_s']:.0f} img/s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # -- the estimates ----------------------------------------------------------------------
    def estimate(self, step_seconds: float) -> None:
        """Say early how long the run will take when that is long, and how to shorten it."""
        self.estimated = True
        epochs_left = self.epochs - self.epoch
        message = long_run_message(step_seconds * epochs_left * self.steps, epochs_left, self.device)
        if message:
            self.log(message)

    def _time_compile(self) -> None:
        """The first compiled step traces and compiles (model, loss, augmentation): say what it cost."""
        if self.synchronize is not None:
            self.synchronize()
        self.compile_seconds = self.clock() - self.began
        self.log(f"torch.compile ({self.compile_mode}): the first step took {self.compile_seconds:.1f} s, "
                 "compilation included")

    def _flush(self, now: float) -> None:
        self.bar.update(self.pending)
        self.pending, self.shown_at = 0, now
