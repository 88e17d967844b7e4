"""Named points where the fault tests kill the process (``kill -9``) on purpose.

Set ``SCLIB_KILL_AT=<point>:<n>`` to SIGKILL the process the n-th time it reaches ``<point>``
(points: ``step``, ``checkpoint``, ``metrics``). Unset, each call costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def maybe_kill(point: str) -> None:
    spec = os.environ.get("SCLIB_KILL_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
