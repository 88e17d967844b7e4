"""Small torch.distributed helpers that degrade to no-ops in a single process.

The Self-Classifier loss needs batch statistics (a softmax over the batch
dimension) from the *global* batch, so logits must be gathered from every rank
while still letting gradients flow back to the rank that produced them.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "cleanup",
    "gather_sizes",
    "gather_with_grad",
    "is_distributed",
    "is_main_process",
    "local_rank",
    "rank",
    "setup",
    "world_size",
]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def setup(backend: str | None = None) -> bool:
    """Join the process group that torchrun describes in the environment, if any.

    A plain ``python`` run (no WORLD_SIZE, or WORLD_SIZE=1) stays single-process,
    so the same entry point works with and without torchrun. Idempotent. Returns
    whether this process is part of a multi-rank group.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, rank=_env_int("RANK", 0), world_size=world)
    return True


def cleanup() -> None:
    """Leave the process group (if one was joined) so the process can exit cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True only inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks; 1 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """This process's rank; 0 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK): which GPU to use."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """Whether this process should log, plot and write checkpoints."""
    return rank() == 0


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's batch size (a collective plus a host sync): for :func:`gather_with_grad`
    callers whose ranks may hold different numbers of rows."""
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient.

    Every rank uses the gathered tensor, so the gradient w.r.t. this rank's rows
    is the sum of the gradients all ranks computed for them (all_reduce), of
    which this rank keeps its own slice. The row counts are given, never exchanged,
    so neither direction reads anything back to the host.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:  # type: ignore[override]
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        max_n = max(sizes)
        padded = x.contiguous()
        if x.shape[0] < max_n:  # all_gather needs equal shapes: pad, then trim
            pad = x.new_zeros((max_n - x.shape[0], *x.shape[1:]))
            padded = torch.cat([padded, pad], dim=0)
        parts = [torch.empty_like(padded) for _ in sizes]
        with torch.profiler.record_function("sclib.collective"):
            dist.all_gather(parts, padded)
        if all(n == max_n for n in sizes):
            return torch.cat(parts, dim=0)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        with torch.profiler.record_function("sclib.collective"):
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 in rank order, keeping autograd.

    Every rank must hold the same number of rows (the trainer splits the global batch evenly),
    unless ``sizes`` lists each rank's count (:func:`gather_sizes` finds them, at the price of
    a host sync). Nothing is read back to the host, so a training step keeps the GPU busy.

    Backward all_reduces (sums) the incoming gradient and returns this rank's
    slice. If every rank computes the same loss from the gathered tensor, each
    rank's local gradient is ``world_size`` times its share of the true gradient;
    DDP's gradient averaging divides that factor out again (see
    ``sclib.core.loss.SelfClassifierLoss``). Identity when not distributed.

    ``torch.distributed.nn.functional.all_gather`` has the same backward (a reduce-scatter,
    or all-to-all plus sum, of every rank's gradient) but is deprecated in torch 2.14, refuses
    to run under torch.compile and cannot take uneven sizes, so this module keeps its own.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"gather_with_grad expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("gather_with_grad needs a tensor with a batch dimension (dim 0); got a scalar")
    if not is_distributed():
        return x
    world = dist.get_world_size()
    if sizes is None:
        sizes = [x.shape[0]] * world
    if len(sizes) != world or sizes[dist.get_rank()] != x.shape[0]:
        raise ValueError(f"gather_with_grad: sizes {list(sizes)} must list {world} row counts, this rank's "
                         f"({dist.get_rank()}) being x.shape[0] = {x.shape[0]}")
    return _GatherWithGrad.apply(x, tuple(int(n) for n in sizes))
