"""Atomic writes, checked reads and the run-folder lock.

Writes: a crash leaves either the old file or the new one, never half of either. Reads: every
file a command reads is checked when read, and a damaged one (cut by an interrupted copy, a
folder where a file belongs, a binary file named as a text file) is one line naming the file
and what to do (:class:`UnreadableFileError`). The lock: one writer per run folder
(:class:`FolderLock`).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import glob
import io
import json
import os
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write through a temp file in the same folder, fsync it, then rename it over ``path``.

    A writer killed at any moment leaves ``path`` as it was (whole, or absent) and at most a
    ``.NAME.PID.*.tmp`` beside it, which no reader takes for the file (tests/test_faults.py
    kills writers half-way through).
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
            handle.write(data)
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


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """JSON, indented for a reader; ``indent=None`` for long arrays (one number a line would triple them)."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    rows = list(rows)
    buffer = io.StringIO()
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))  # rows may differ in their columns
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def display_text(text: str) -> str:
    """``text`` with what is not valid UTF-8 shown as its escaped bytes.

    A name read from the file system that is not UTF-8 (a Latin-1 class folder ``caf\\xe9`` from a
    Windows archive) arrives as a str with lone surrogates (``os.fsdecode``'s surrogateescape),
    which fonts, UTF-8 files and notebooks refuse; it is shown as ``caf\\xe9``: visible, and two
    such names stay distinct. Valid text comes back unchanged.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte made
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


# What to do about a damaged file when the caller knows nothing better.
COPY_AGAIN = "copy it again from where it was made, or rerun the command that writes it"


class UnreadableFileError(ValueError):
    """A file a command reads is missing, a folder, not text, or cut short; the message names it
    and says what to do (exit status 2 on the command line)."""


def read_text(path: str | Path, what: str = "file", fix: str = COPY_AGAIN) -> str:
    """A UTF-8 text file's contents; UnreadableFileError for a missing file, a folder, a binary
    file (a checkpoint named where a recipe belongs) or one that cannot be read.

    ``what`` names the file's role in the message ("recipe file", "--grid"); ``fix`` says what
    to do about it.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:  # kept a FileNotFoundError: callers tell "missing" from "damaged"
        raise FileNotFoundError(f"{what} {path} does not exist; {fix}") from None
    except IsADirectoryError:
        raise UnreadableFileError(f"{what} {path} is a folder, not a file; name the file inside it") from None
    except UnicodeDecodeError:
        raise UnreadableFileError(f"{what} {path} is not a UTF-8 text file (a checkpoint or an image?); "
                                  "name a text file") from None
    except OSError as err:
        raise UnreadableFileError(f"cannot read {what} {path}: {err.strerror or err}; {fix}") from None


def read_json(path: str | Path, fix: str = COPY_AGAIN, kind: type | None = None) -> Any:
    """A JSON file's value; UnreadableFileError naming the file when it cannot be read, is not
    JSON (cut short, say) or, with ``kind`` (``dict``, ``list``), holds another kind of value."""
    path = Path(path)
    text = read_text(path, "file", fix)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UnreadableFileError(f"{path} is damaged (not valid JSON: {err}); {fix}") from None
    if kind is not None and not isinstance(value, kind):
        raise UnreadableFileError(f"{path} is damaged (it holds a JSON {type(value).__name__}, not a "
                                  f"{kind.__name__}); {fix}")
    return value


def read_record(path: str | Path, keys: tuple[str, ...] = (), fix: str = COPY_AGAIN) -> dict[str, Any]:
    """A JSON object that must hold ``keys``: a run's metrics.json, eval.json, study.json."""
    record = read_json(path, fix, dict)
    missing = [k for k in keys if k not in record]
    if missing:
        raise UnreadableFileError(f"{path} is damaged or from another version (it lacks {', '.join(missing)}); {fix}")
    return record


def read_csv_rows(path: str | Path, columns: tuple[str, ...] = (), fix: str = COPY_AGAIN) -> list[dict[str, str]]:
    """A CSV file that :func:`write_csv` wrote, checked whole: every row complete, ``columns`` present.

    :func:`write_csv` ends every row with a newline, so a file whose last line lacks one was cut
    mid-line (an interrupted copy); a row with fewer or more fields than the header is damaged too.
    """
    path = Path(path)
    text = read_text(path, "file", fix)
    if text and not text.endswith("\n"):
        raise UnreadableFileError(f"{path} is damaged (cut in the middle of a line); {fix}")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise UnreadableFileError(f"{path} is damaged (empty, no header line); {fix}")
    rows = []
    for line, values in enumerate(reader, start=2):
        if len(values) != len(header):
            raise UnreadableFileError(f"{path} is damaged (line {line} has {len(values)} fields, the header "
                                      f"{len(header)}); {fix}")
        rows.append(dict(zip(header, values)))
    missing = [c for c in columns if c not in header]
    if missing:
        raise UnreadableFileError(f"{path} is damaged or from another version (no column {', '.join(missing)}); {fix}")
    return rows


def make_folder(path: str | Path, what: str = "--out") -> Path:
    """Create a folder the user named (and its parents); RunFolderError in one line when it is a
    file, or cannot be made (a read-only file system, a name too long, no permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{what} {path} is a file, not a folder; choose another {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot create {what} {path}: {err.strerror or err}; choose a folder you can "
                             "write to") from None
    return path


# Most file systems (ext4, XFS, btrfs, APFS, NTFS) cap one name at 255 bytes.
def repository_root() -> Path | None:
    """The checkout this package runs from (beside its pyproject.toml); None for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "sclib").is_dir() else None


def suggested_command(line: str, *paths: str | Path) -> str:
    """A command a message suggests, its ``{}`` filled with ``paths`` as seen from the repository root.

    Notebooks run in notebooks/ or in a study's folder, so a hint built from their relative
    paths (``--out ../runs/lab/digits``), pasted at the root where the README's commands run,
    named a folder outside the repository. A path inside the checkout is given relative to its
    root (then, where the current folder is not the root, the message says where to run it), one
    outside it absolute. An installed copy has no root: paths stay as given.
    """
    root = repository_root()
    if root is None:
        return line.format(*map(str, paths))
    shown = [_from_root(Path(p), root) for p in paths]
    relative = any(not Path(p).is_absolute() for p in shown)
    where = "(from the repository root) " if relative and Path.cwd().resolve() != root else ""
    return where + line.format(*shown)


def _from_root(path: Path, root: Path) -> str:
    full = Path(os.path.abspath(path.expanduser()))
    resolved = full.resolve()
    for candidate in (full, resolved):  # through a symlinked checkout as well as the real one
        if candidate.is_relative_to(root):
            return str(candidate.relative_to(root)) or "."
    return str(full)


NAME_MAX = 255


def path_problem(path: str | Path, what: str) -> str | None:
    """Why a path the user typed cannot work, before anything is read or written (None if it can):
    a name over :data:`NAME_MAX` bytes, which the file system refuses with ENAMETOOLONG."""
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            return (f"{what} {path} has a name of {size} bytes ({part[:20]}...); file systems allow "
                    f"{NAME_MAX}: choose a shorter name")
    return None


# ----------------------------------------------------------------------------------------------
# One writer per run folder


LOCK_NAME = ".sclib.lock"


class FolderBusyError(RunFolderError):
    """Another live process holds the folder's lock; the message names its pid and host."""


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.sclib.lock``, held while a process writes the folder.

    The kernel drops the lock when its holder exits, however it exits (``kill -9`` included), so
    a lock file left by a dead process never blocks; the file only records who holds the lock
    (pid, host, start time) for the second writer's message. Use as a context manager.
    """

    def __init__(self, folder: str | Path, what: str = "run folder") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> FolderLock:
        self._created = not self.folder.exists()
        make_folder(self.folder, "--out")
        while True:
            fd = self._open_locked()
            try:  # the file may have been removed (see __exit__) between our open and our flock
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        except OSError as err:
            os.close(fd)
            raise _cannot_write(self.path, err) from None
        self._fd = fd
        return self

    def _open_locked(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        except OSError as err:
            self._tidy()
            raise _cannot_write(self.path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderBusyError(f"{self.what} {self.folder} is in use by {self.holder()}; wait for it to "
                                      "finish (or stop it), or choose another --out") from None
            raise _cannot_write(self.path, err) from None
        return fd

    def holder(self) -> str:
        """Who holds the lock, as its file says ("pid 123 on host node7"); read by the refused writer."""
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text or "another process"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self._tidy()  # while still holding the lock
            os.close(self._fd)  # closing drops the flock; a file left behind is harmless
            self._fd = None

    def _tidy(self) -> None:
        """A folder that holds nothing but the lock (a run refused before it wrote anything) is left
        as it was: the lock file goes, and the folder too when this lock made it."""
        try:
            if [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                self.path.unlink()
            if self._created and not any(self.folder.iterdir()):
                self.folder.rmdir()
        except OSError:
            pass


def first_line(message: object) -> str:
    """The first non-blank line of a message or an error (an error without one: its type's name),
    so an error quoted inside a one-line message does not break it."""
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(message).__name__ if isinstance(message, BaseException) else ""
