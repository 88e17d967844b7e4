"""``python tests/_kill.py POINT:N ARGS...``: ``python -m sclib ARGS`` that SIGKILLs itself the
N-th time it reaches POINT (tests/test_faults.py's kill -9 cases).

The kill is injected from outside the package, so no production function carries a hook:

* ``step``: after the N-th training step (``Trainer.train_step``) returns;
* ``checkpoint`` / ``metrics``: half-way through the N-th write of ``last.pt`` / ``metrics.json``,
  with half the bytes in the temp file on disk and the rename never reached. The write is
  caught at the file object ``sclib.run.files`` opens, so the atomic writer itself runs as
  it does in production.
"""

from __future__ import annotations

import os
import signal
import sys

from sclib.run import files
from sclib.train import Trainer

TARGETS = {"checkpoint": "last.pt", "metrics": "metrics.json"}


class _HalfThenKill:
    """A file object whose write puts half the bytes on disk, then kills the process."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        return 0  # never reached

    def __getattr__(self, name: str):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)


def arm(point: str, nth: int) -> None:
    """Patch the package so that the process dies the ``nth`` time it reaches ``point``."""
    seen = {"n": 0}

    def reached() -> bool:
        seen["n"] += 1
        return seen["n"] == nth

    if point == "step":
        step = Trainer.train_step

        def train_step(self, *args, **kwargs):
            result = step(self, *args, **kwargs)
            if reached():
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        Trainer.train_step = train_step
        return
    target, fdopen = TARGETS[point], files.os.fdopen

    def opened(fd, *args, **kwargs):
        handle = fdopen(fd, *args, **kwargs)
        temp = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))  # .last.pt.PID.xxx.tmp
        if temp.startswith(f".{target}.") and reached():
            return _HalfThenKill(handle)
        return handle

    files.os = _OsWith(fdopen=opened)


class _OsWith:
    """``os`` as ``sclib.run.files`` sees it, with some functions replaced."""

    def __init__(self, **replaced):
        self.__dict__.update(replaced)

    def __getattr__(self, name: str):
        return getattr(os, name)


if __name__ == "__main__":
    from sclib.cli import main

    name, _, count = sys.argv[1].partition(":")
    arm(name, int(count or 1))
    sys.exit(main(sys.argv[2:]))
