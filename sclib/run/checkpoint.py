"""Checkpoints: plain tensors and containers only, so loading never needs to run pickled code."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from sclib.run.files import first_line, write_bytes
from sclib.run.paths import LAST

_DIGEST = "sha256"  # key of the checksum save() adds; load() checks and removes it
_KEPT = re.compile(r"epoch_(\d{4,})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class IncompleteCheckpointError(CheckpointError):
    """A checkpoint whose state lacks what the caller needs (an older version's, say): intact, so
    not a reason to fall back to an older file, which that version wrote alike."""


# What each use of a checkpoint reads from its state.
FOR_WEIGHTS = ("model", "epoch")  # evaluate, probe, features
FOR_RESUME = ("model", "optimizer", "epoch", "history")  # training continues


def kept_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def save(path: str | Path, state: dict[str, Any]) -> Path:
    """Save with a checksum of every value: the zip layer does not check tensor bytes on load."""
    buffer = io.BytesIO()
    torch.save({**state, _DIGEST: _digest(state)}, buffer)
    return write_bytes(path, buffer.getvalue())


def load(path: str | Path, map_location: str | torch.device = "cpu", require: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load with ``weights_only=True``: a file carrying pickled code is refused, not executed.

    ``require``: the state's keys the caller reads (:data:`FOR_WEIGHTS`, :data:`FOR_RESUME`); a
    state without one raises IncompleteCheckpointError naming the file and the keys, instead of
    a KeyError (or a wrong diagnosis) later.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; name a .pt file inside it (e.g. {path / LAST})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data and was refused "
            f"(only weights_only checkpoints are loaded; it may be a tampered file): {first_line(err)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: {first_line(err)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a training state (it holds a {type(state).__name__})")
    expected = state.pop(_DIGEST, None)
    if expected is not None and expected != _digest(state):
        raise CheckpointError(f"checkpoint {path} is corrupted: its contents no longer match the checksum "
                              "written with it")
    missing = [key for key in require if key not in state]
    if missing:
        raise IncompleteCheckpointError(
            f"checkpoint {path} lacks {', '.join(missing)} (written by another version of sclib?), which "
            f"{'resuming' if 'optimizer' in require else 'reading its weights'} needs; use a checkpoint this "
            "version wrote, or train again into another --out")
    return state


def weights_digest(weights: dict[str, Any]) -> str:
    """sha256 of a state dict's names, shapes, dtypes and bytes: a checkpoint's identity for caches
    of what it computes (equal weights give equal digests whatever file holds them)."""
    return _digest(weights)


def _digest(obj: Any) -> str:
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    """Hash a state's structure and values, tensors by their raw bytes."""
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(b"{")
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
        digest.update(b"}")
    elif isinstance(obj, (list, tuple)):
        digest.update(b"[")
        for value in obj:
            _feed(digest, value)
        digest.update(b"]")
    else:
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())


def kept(folder: str | Path) -> list[Path]:
    """The kept-epoch checkpoints of a run (epoch_XXXX.pt, Config keep_epochs), oldest first."""
    folder = Path(folder)
    found = [p for p in folder.glob("epoch_*.pt") if _KEPT.search(p.name)]
    return sorted(found, key=lambda p: int(_KEPT.search(p.name).group(1)))


def kept_epoch(path: str | Path) -> int:
    match = _KEPT.search(Path(path).name)
    if not match:
        raise ValueError(f"{path} is not a kept-epoch checkpoint (epoch_XXXX.pt)")
    return int(match.group(1))


def load_latest(folder: str | Path, map_location: str | torch.device = "cpu",
                require: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The newest intact state of a run: ``last.pt``, else the newest intact milestone.

    A damaged file is reported on stderr and skipped rather than ending the run, since an
    older milestone still saves most of the work. An intact one that lacks a key of ``require``
    ends it (IncompleteCheckpointError): the milestones beside it were written alike.
    """
    folder = Path(folder)
    candidates = [folder / LAST, *kept(folder)[::-1]]
    existing = [p for p in candidates if p.exists()]
    if not existing:
        return None
    for path in existing:
        try:
            state = load(path, map_location, require)
        except IncompleteCheckpointError:
            raise
        except CheckpointError as err:
            print(f"warning: {err}; trying an older checkpoint", file=sys.stderr)
            continue
        if path.name != LAST:
            print(f"warning: resuming from milestone {path}", file=sys.stderr)
        state["path"] = str(path)  # which file a later error should name
        return state
    raise CheckpointError(
        f"no intact checkpoint in {folder} (tried {', '.join(p.name for p in existing)}); "
        f"to start over, delete {folder.parent} or choose another --out"
    )
