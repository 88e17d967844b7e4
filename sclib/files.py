"""Atomic writes: a crash leaves either the old file or the new one, never half of either."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sclib import faults


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


class RunFolderError(OSError):
    """The run folder cannot be written (full disk, read-only, not a folder)."""


def _cannot_write(path: Path, err: OSError) -> RunFolderError:
    return RunFolderError(f"cannot write {path}: {err.strerror or err}; "
                          "check that the run folder is writable and the disk has space")


def write_bytes(path: str | Path, data: bytes, fault_point: str | None = None) -> Path:
    """Write through a temp file in the same folder, fsync it, then rename it over ``path``.

    The data goes out in two halves with a fault point between them, so the fault tests can
    kill a writer with half a file on disk and check that ``path`` itself was never touched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _cannot_write(path, err) from err
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "wb") as handle:
            half = len(data) // 2
            handle.write(data[:half])
            if fault_point:
                handle.flush()
                faults.maybe_kill(fault_point)
            handle.write(data[half:])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _cannot_write(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temps(path)
    return path


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` left by writers that were killed mid-write.

    A ``kill -9`` skips the cleanup above; the next successful write of the same file removes
    the debris, so a resumed run folder holds no half-written files. A temp file whose writer
    (the pid in its name) is another live process is left alone; one bearing this process's pid
    is an earlier process's (one process never writes the same file twice at once).
    """
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        try:
            temp.unlink(missing_ok=True)
        except OSError:  # debris we cannot remove must not fail a write that succeeded
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def write_text(path: str | Path, text: str, fault_point: str | None = None) -> Path:
    return write_bytes(path, text.encode(), fault_point)


def write_json(path: str | Path, data: Any, fault_point: str | None = None) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n", fault_point)


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    rows = list(rows)
    buffer = io.StringIO()
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))  # rows may differ in their columns
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
