"""Self-Classifier loss (Amrani et al., ECCV 2022).

The loss asks each view's class prediction to match another view's *batch-balanced*
assignment. Balance comes from a softmax over the batch dimension (each class must
be used by some samples) and the N/C prior in the log term, which is what prevents
the trivial "everything in one class" solution without a stop-gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sclib.core.distributed import gather_with_grad, is_distributed

__all__ = ["SelfClassifierLoss", "clusters_used", "view_pairs"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def view_pairs(n_views: int) -> list[tuple[int, int]]:
    """Ordered (target view, prediction view) pairs used by the loss.

    Views 0 and 1 are global crops, views >= 2 are local crops. Local crops only
    ever predict (or are predicted from) global crops, as in the multi-crop recipe,
    so local-local pairs are skipped.
    """
    return [
        (i, j)
        for i in range(n_views)
        for j in range(n_views)
        if i != j and not (i >= 2 and j >= 2)
    ]


def clusters_used(logits: torch.Tensor) -> int:
    """Number of distinct argmax classes: a cheap collapse monitor during training."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("clusters_used expects logits of shape [N, C] (a 2-D torch.Tensor)")
    if logits.shape[0] == 0:
        return 0
    return int(torch.unique(logits.detach().argmax(dim=1)).numel())


def _validate(outputs: Sequence[Sequence[torch.Tensor]]) -> None:
    if not isinstance(outputs, Sequence) or len(outputs) == 0:
        raise ValueError(
            "SelfClassifierLoss got no outputs: pass a list over heads of a list over views "
            "of [N, C] logits, e.g. [[logits_view1, logits_view2]]"
        )
    for h, views in enumerate(outputs):
        if isinstance(views, torch.Tensor) or not isinstance(views, Sequence):
            raise ValueError(
                f"head {h}: expected a list of per-view logits, got {type(views).__name__}; "
                "wrap a single head as [[view1, view2, ...]]"
            )
        if len(views) < 2:
            raise ValueError(
                f"head {h}: the loss compares views, so it needs at least 2 views, got {len(views)}"
            )
        for v, x in enumerate(views):
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"head {h}, view {v}: expected a torch.Tensor, got {type(x).__name__}")
            if x.dim() != 2:
                raise ValueError(
                    f"head {h}, view {v}: logits must be 2-D [N, C], got shape {tuple(x.shape)}"
                )
            if x.shape != views[0].shape:
                raise ValueError(
                    f"head {h}: all views must have the same [N, C] shape; view 0 is "
                    f"{tuple(views[0].shape)} but view {v} is {tuple(x.shape)}"
                )
        if views[0].shape[0] == 0 or views[0].shape[1] == 0:
            raise ValueError(f"head {h}: logits must have N > 0 samples and C > 0 classes")


def _to_loss_dtype(x: torch.Tensor) -> torch.Tensor:
    # Softmax over the batch at tau=0.05 and log(N/C * p) overflow/underflow in half
    # precision, so fp16/bf16 logits are promoted; float64 is kept for exact tests.
    return x.float() if x.dtype in _LOW_PRECISION or not x.is_floating_point() else x


class SelfClassifierLoss(torch.nn.Module):
    """Self-Classifier cross-entropy between views, with global batch statistics.

    For every head and ordered view pair (i, j), skipping local-local pairs::

        target_i = row_l1(softmax_dim0(z_i / col_tau))
        pred_j   = col_l1(softmax_dim1(z_j / row_tau))
        term     = -mean_rows sum_c target_i * log(N / C * pred_j + eps)

    and the loss is the mean of all terms. No stop-gradient on either side.

    Distributed gradient convention: under torch.distributed every rank gathers
    all logits with :func:`sclib.core.distributed.gather_with_grad` and computes the
    *same* global loss (N = global batch). The gather's backward sums the
    gradients of all ranks, so the gradient w.r.t. a rank's local logits is
    ``world_size`` times its slice of the 1-process gradient on the concatenated
    batch. DDP then *averages* parameter gradients over ranks, dividing that
    factor out: the trainer must call ``loss.backward()`` on this value as is,
    with plain DDP (or an all_reduce mean of gradients) and no extra scaling.
    Do not divide the loss by world_size and do not sum gradients instead of
    averaging them.

    The computation runs in float32 (or float64 if given) with autocast disabled.
    """

    def __init__(self, row_tau: float = 0.1, col_tau: float = 0.05, eps: float = 1e-8):
        super().__init__()
        for name, value in (("row_tau", row_tau), ("col_tau", col_tau)):
            if not float(value) > 0:
                raise ValueError(f"{name} must be a positive temperature, got {value}")
        if not float(eps) >= 0:
            raise ValueError(f"eps must be >= 0 (it guards log(0)), got {eps}")
        self.row_tau = float(row_tau)
        self.col_tau = float(col_tau)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"row_tau={self.row_tau}, col_tau={self.col_tau}, eps={self.eps}"

    def _pair_term(self, target_logits: torch.Tensor, pred_logits: torch.Tensor) -> torch.Tensor:
        n, c = pred_logits.shape
        target = torch.softmax(target_logits / self.col_tau, dim=0)
        target = target / target.sum(dim=1, keepdim=True)
        pred = torch.softmax(pred_logits / self.row_tau, dim=1)
        pred = pred / pred.sum(dim=0, keepdim=True)
        return -(target * torch.log(n / c * pred + self.eps)).sum(dim=1).mean()

    def forward(self, outputs: list[list[torch.Tensor]]) -> torch.Tensor:
        _validate(outputs)  # shapes and types only: nothing is read back from the device
        device_type = outputs[0][0].device.type
        terms = []
        with torch.autocast(device_type=device_type, enabled=False):
            for full in _gather_heads(outputs):
                for i, j in view_pairs(len(full)):
                    terms.append(self._pair_term(full[i], full[j]))
        return torch.stack(terms).mean()


def _gather_heads(outputs: Sequence[Sequence[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Every head's logits of every view over the global batch, in the loss's dtype.

    Under torch.distributed the heads of a view travel side by side along the class dimension,
    so a step makes one gather per view instead of one per head and view (2 instead of 8
    collectives for the seed recipe's 4 heads); alone, nothing is gathered or copied.
    """
    local = [[_to_loss_dtype(x) for x in views] for views in outputs]
    if not is_distributed():
        return local
    classes = [views[0].shape[1] for views in local]
    per_view = [gather_with_grad(torch.cat([views[v] for views in local], dim=1)).split(classes, dim=1)
                for v in range(len(local[0]))]
    return [[per_view[v][h] for v in range(len(per_view))] for h in range(len(local))]
