"""Optimisers and the per-step learning-rate schedule of the seed recipe."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, start_lr: float, min_lr: float) -> float:
    """Linear warm-up from ``start_lr`` to ``lr``, then cosine down to ``min_lr``, per step.

    Per-step rather than per-epoch, so a short run on a small data set still warms up smoothly.
    """
    if step < warmup_steps:
        return start_lr + (lr - start_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Biases and norm parameters take no weight decay (and LARS skips their trust ratio).
    decay, plain = [], []
    for param in model.parameters():
        if param.requires_grad:
            (plain if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars": True},
        {"params": plain, "weight_decay": 0.0, "lars": False},
    ]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """``fused=True`` asks torch's SGD and AdamW for their fused kernel (one launch for all
    parameters instead of several per tensor list): same update, rounded differently, so the
    trainer asks for it on CUDA only and CPU runs stay bit-identical. LARS has no fused form."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is unknown; choose one of {', '.join(OPTIMIZERS)}")
    optimizer = OPTIMIZERS[name](_decay_groups(model, weight_decay), lr, momentum)
    set_fused(optimizer, fused)
    return optimizer


def set_fused(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """Switch torch's fused kernel on or off for every group (where the optimiser has one).

    ``load_state_dict`` restores the flags a checkpoint was saved with, so a trainer calls this
    again after loading: a CUDA checkpoint resumed on a CPU must not ask for the CUDA kernel.
    """
    if not isinstance(optimizer, (torch.optim.SGD, torch.optim.AdamW)):
        return
    for group in optimizer.param_groups:
        group["fused"] = True if fused else None  # None: torch's default (foreach on CUDA, a loop on CPU)
        group["foreach"] = None
    if fused:  # AdamW's fused kernel reads its step counts on the parameters' device
        for param, state in optimizer.state.items():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(param.device)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al., 2017), as in BYOL/Barlow Twins.

    The trust ratio ``eta * |w| / |g + wd w|`` rescales each weight matrix's update; groups
    with ``lars=False`` (biases, norms) get plain SGD.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    w_norm, u_norm = torch.norm(p), torch.norm(update)
                    ratio = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm)
                    )
                    update = update.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


# name -> builder(parameter groups, lr, momentum)
OPTIMIZERS: dict[str, Callable[[list[dict], float, float], torch.optim.Optimizer]] = {
    "sgd": lambda groups, lr, momentum: torch.optim.SGD(groups, lr=lr, momentum=momentum),
    "lars": lambda groups, lr, momentum: LARS(groups, lr=lr, momentum=momentum),
    "adamw": lambda groups, lr, momentum: torch.optim.AdamW(groups, lr=lr),
}
