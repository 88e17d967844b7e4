"""Nearest-neighbour queue: view 1's embedding is replaced by a similar *other* sample's.

Self-Classifier (Amrani et al., ECCV 2022) can use past embeddings as an extra, harder
positive: the official code (``NNQueue`` in ``src/utils.py``, used by ``train`` in
``src/train.py``) keeps a FIFO of detached, L2-normalised view-1 embeddings together with each
sample's data set index. Once the FIFO is full, view 1's embeddings are swapped for their
nearest queue entries (inner product, i.e. cosine similarity), never for the sample's own
earlier embedding; before that, view 1 is used as is. After the swap, the current (gathered)
batch is pushed. This module matches that behaviour, with two deliberate differences that
only matter in corner cases the official code does not handle: every entry that carries the
query's index is excluded (not just the top-1 one), and a batch larger than the queue keeps
its newest rows.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["NNQueue"]


class NNQueue:
    """A ring buffer of past embeddings and their data set indices, queried for nearest neighbours."""

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu") -> None:
        if size < 1:
            raise ValueError(f"NNQueue size must be at least 1, got {size}")
        if dim < 1:
            raise ValueError(f"NNQueue dim must be at least 1, got {dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.device = torch.device(device)
        self.items = torch.zeros(self.size, self.dim, device=self.device)
        self.indices = torch.full((self.size,), -1, dtype=torch.long, device=self.device)
        self.pointer = 0  # next slot to write; until the queue is full, also the number of entries
        self.full = False

    def nearest(self, z: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Each row's most similar queue entry from another sample; ``z`` itself until the queue is full.

        Excluding every entry with the query's own index is a superset of the official top-2 rule
        (which only skips the best entry when it is the query's own) and stays correct when the
        queue holds a sample more than once. A row with no admissible entry (only possible when
        the queue holds nothing but that sample) keeps its own, detached, embedding.
        Runs without host-device synchronisation, so it can sit inside a GPU training step.
        """
        self._check_batch(z, indices)
        if not self.full:
            return z
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            query = z.detach().to(self.device, torch.float32)
            sims = query @ self.items.T
            own = indices.to(self.device, torch.long).unsqueeze(1) == self.indices.unsqueeze(0)
            sims = sims.masked_fill(own, float("-inf"))
            best_sim, best = sims.max(dim=1)
            found = (best_sim > float("-inf")).unsqueeze(1)
            out = torch.where(found, self.items[best], query)
        return out.to(z.device, z.dtype)

    def push(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Append a batch in FIFO order, overwriting the oldest entries; the newest ``size`` rows are kept."""
        self._check_batch(z, indices)
        n = len(z)
        keep = min(n, self.size)
        # slots the last `keep` rows would occupy had the batch been written one row at a time
        slots = (torch.arange(n - keep, n, device=self.device) + self.pointer) % self.size
        with torch.no_grad():
            self.items.index_copy_(0, slots, z[n - keep:].detach().to(self.device, torch.float32))
            self.indices.index_copy_(0, slots, indices[n - keep:].to(self.device, torch.long))
        if self.pointer + n >= self.size:
            self.full = True
        self.pointer = (self.pointer + n) % self.size

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and ints (on the CPU), so a checkpoint loads with ``weights_only=True``."""
        return {
            "items": self.items.to("cpu", copy=True),
            "indices": self.indices.to("cpu", copy=True),
            "pointer": self.pointer,
            "full": self.full,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a queue saved by ``state_dict``; refuses one of another size or dimension."""
        missing = {"items", "indices", "pointer", "full"} - set(state)
        if missing:
            raise ValueError(f"NNQueue state lacks {sorted(missing)}")
        items, indices, pointer = state["items"], state["indices"], int(state["pointer"])
        if tuple(items.shape) != (self.size, self.dim):
            raise ValueError(
                f"NNQueue state holds {tuple(items.shape)} items but this queue is "
                f"size {self.size} x dim {self.dim}"
            )
        if tuple(indices.shape) != (self.size,):
            raise ValueError(f"NNQueue state holds {tuple(indices.shape)} indices, expected ({self.size},)")
        if not 0 <= pointer < self.size:
            raise ValueError(f"NNQueue state pointer {pointer} is outside [0, {self.size})")
        self.items = items.to(self.device, torch.float32, copy=True)
        self.indices = indices.to(self.device, torch.long, copy=True)
        self.pointer = pointer
        self.full = bool(state["full"])

    def _check_batch(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Shape checks only (no tensor values are read, so no synchronisation)."""
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"NNQueue expects embeddings of shape [N, {self.dim}], got {list(z.shape)}")
        if tuple(indices.shape) != (len(z),):
            raise ValueError(f"NNQueue expects {len(z)} data set indices, got shape {list(indices.shape)}")
