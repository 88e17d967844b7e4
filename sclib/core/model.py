"""Backbone -> MLP projector -> several cosine classification heads.

The model knows no data set: it is built from channel count, image size and head sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock

from sclib.core.names import CLS_GAINS

EmbeddingHook = Callable[[list[torch.Tensor]], list[torch.Tensor]]


def _resnet18(in_channels: int, image_size: int, small_width: int) -> tuple[nn.Module, int]:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool) below 64 px, because the
    ImageNet stem would shrink a 32 px image to 8 px before the first block."""
    net = resnet18(weights=None)
    if image_size < 64:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


def _small(in_channels: int, image_size: int, small_width: int) -> tuple[nn.Module, int]:
    net = SmallCNN(in_channels, small_width)
    return net, net.out_features


def _stride2_stem(in_channels: int, image_size: int, small_width: int) -> tuple[nn.Module, int]:
    net = SmallCNN(in_channels, small_width, stem_stride=2)
    return net, net.out_features


def _small_resnet(in_channels: int, image_size: int, small_width: int) -> tuple[nn.Module, int]:
    net = SmallResNet(in_channels, small_width)
    return net, net.out_features


def _wide_late(in_channels: int, image_size: int, small_width: int) -> tuple[nn.Module, int]:
    net = WideLateCNN(in_channels, small_width)
    return net, net.out_features


def _airbench(in_channels: int, image_size: int, small_width: int) -> tuple[nn.Module, int]:
    net = AirbenchCNN(in_channels, small_width)
    return net, net.out_features


# name -> builder(in_channels, image_size, small_width) -> (feature extractor, its output width).
# The one place a network is named: the config's `backbone` field, the CLI and the benchmarks
# (benchmarks/networks.py) read this dict. Every builder but resnet18 takes its width from
# `small_width` (results/tuning.md section 10 ranks them on CIFAR-10 at equal core-minutes).
BACKBONES: dict[str, Callable[[int, int, int], tuple[nn.Module, int]]] = {
    "resnet18": _resnet18,
    "small": _small,
    "stride2_stem": _stride2_stem,
    "small_resnet": _small_resnet,
    "wide_late": _wide_late,
    "airbench": _airbench,
}


def build_backbone(name: str, in_channels: int, image_size: int, small_width: int = 32) -> tuple[nn.Module, int]:
    """A feature extractor and its output width; ``small_width`` only shapes the small CNN."""
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r} is unknown; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels, image_size, small_width)


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _check_width(name: str, width: int) -> None:
    if width < 1:
        raise ValueError(f"{name} width must be a positive integer, got {width}")


class SmallCNN(nn.Sequential):
    """A VGG-style CNN (five 3x3 conv blocks, two of them strided): fast enough to pre-train
    on a laptop CPU in minutes. ``width`` sets the first stage; the stages are w, 2w, 4w, 4w, 8w
    channels, so compute grows with width squared and a narrower net buys more epochs.

    ``stem_stride=2`` (backbone ``stride2_stem``) halves the resolution in the first layer: a
    quarter of the pixels for every later layer, the fast baseline of the network comparison.
    """

    def __init__(self, in_channels: int, width: int = 32, stem_stride: int = 1) -> None:
        _check_width("SmallCNN", width)
        self.out_features = 8 * width
        super().__init__(
            _conv_block(in_channels, width, stem_stride),
            _conv_block(width, 2 * width, 1),
            _conv_block(2 * width, 4 * width, 2),
            _conv_block(4 * width, 4 * width, 1),
            _conv_block(4 * width, self.out_features, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


class WideLateCNN(nn.Sequential):
    """Keeps the full resolution for two layers of ``width`` channels, then doubles the channels
    at every halving: (w, w) at 1x, (2w, 2w) at 1/2, (4w, 4w) at 1/4, 8w at 1/8, then a global
    average pool (8w features).

    Shaped for AMX, which multiplies bf16 in tiles of 16 rows x 32 values: with ``width`` a
    multiple of 32 every convolution after the stem fills whole tiles, where SmallCNN at width 16
    runs its full-resolution layers on half tiles. At width 32 it costs 43 MMAC a 32 px view
    (SmallCNN width 16: 24).
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        _check_width("WideLateCNN", width)
        self.out_features = 8 * width
        super().__init__(
            _conv_block(in_channels, width, 1),
            _conv_block(width, width, 1),
            _conv_block(width, 2 * width, 2),
            _conv_block(2 * width, 2 * width, 1),
            _conv_block(2 * width, 4 * width, 2),
            _conv_block(4 * width, 4 * width, 1),
            _conv_block(4 * width, self.out_features, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


class _AirbenchBlock(nn.Sequential):
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU, as in Keller Jordan's airbench."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class AirbenchCNN(nn.Sequential):
    """The airbench layout (a conv stem, then three conv-pool-conv blocks; airbench94 uses widths
    64/256/256 for supervised CIFAR-10 in seconds on a GPU) at widths w, 2w, 4w, 4w, with a global
    max-and-average pool replaced by the average pool every backbone here ends with (4w features).
    The learned whitening stem of airbench is a plain conv here: it needs the data set's patches.
    """

    def __init__(self, in_channels: int, width: int = 16) -> None:
        _check_width("AirbenchCNN", width)
        self.out_features = 4 * width
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
            _AirbenchBlock(width, 2 * width),
            _AirbenchBlock(2 * width, 4 * width),
            _AirbenchBlock(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


class SmallResNet(nn.Module):
    """ResNet-18's layout (a 3x3 stem, four stages of two basic blocks, strides 1, 2, 2, 2) at
    stage widths w, 2w, 4w, 8w instead of 64..512: torchvision's own BasicBlock, the CIFAR stem
    (no max-pool). Width 64 would be ResNet-18 itself; width 16 costs 35 MMAC a 32 px view.
    """

    def __init__(self, in_channels: int, width: int = 16) -> None:
        super().__init__()
        _check_width("SmallResNet", width)
        self.out_features = 8 * width
        self.stem = _conv_block(in_channels, width, 1)
        stages, c_in = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            c_out, stride = width * mult, 1 if i == 0 else 2
            down = None
            if stride != 1 or c_in != c_out:
                down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            stages += [BasicBlock(c_in, c_out, stride, down), BasicBlock(c_out, c_out)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


def build_projector(width: int, hidden: int, out: int) -> nn.Sequential:
    """Linear -> BN -> LeakyReLU, then a plain Linear, as in the official code."""
    return nn.Sequential(
        nn.Linear(width, hidden),
        nn.BatchNorm1d(hidden),
        nn.LeakyReLU(inplace=True),
        nn.Linear(hidden, out),
    )


class CosineHead(nn.Module):
    """Weight-normalised linear layer without bias; its gain is fixed at 1 or learned.

    With L2-normalised inputs and the gain fixed at 1 (``cls_gain="fixed"``, the default) the
    logits are cosine similarities in [-1, 1]; the loss's temperatures alone set their scale,
    so no head can win by growing its weights. The official ``src/model.py`` wraps each head in
    ``nn.utils.weight_norm`` with ``weight_g`` filled with 1 but trainable (``cls_gain="learned"``
    here: one gain per class, shape ``(classes,)``, so it takes no weight decay, like a norm
    layer's scale). Its ``--fixed_cls`` freezes the whole head, direction included, which this
    class does not offer.

    It computes in fp32 even under bf16 autocast: the loss divides these cosines by 0.05-0.1,
    which would scale bf16's rounding of them (about 4e-3) by 10-20 (an estimate: measured, the
    bf16 step's gradients differ from fp32's about as much either way, the backbone dominating);
    in fp32 the head costs next to nothing (C x 128 weights).
    """

    def __init__(self, in_features: int, classes: int, learned_gain: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, in_features))
        nn.init.normal_(self.weight, std=in_features**-0.5)
        self.gain = nn.Parameter(torch.ones(classes)) if learned_gain else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            cosines = F.linear(x.float(), F.normalize(self.weight, dim=1))
            return cosines if self.gain is None else cosines * self.gain


class SelfClassifier(nn.Module):
    """Backbone, projector and one cosine head per entry of ``heads``."""

    def __init__(
        self,
        backbone: str,
        in_channels: int,
        image_size: int,
        heads: list[int],
        mlp_hidden: int = 4096,
        mlp_out: int = 128,
        small_width: int = 32,
        cls_gain: str = "fixed",
    ) -> None:
        super().__init__()
        self.backbone, self.feature_dim = build_backbone(backbone, in_channels, image_size, small_width)
        self.projector = build_projector(self.feature_dim, mlp_hidden, mlp_out)
        if cls_gain not in CLS_GAINS:
            raise ValueError(f"cls_gain {cls_gain!r} is unknown; choose one of {', '.join(CLS_GAINS)}")
        self.heads = nn.ModuleList(CosineHead(mlp_out, c, learned_gain=cls_gain == "learned") for c in heads)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features, what probes and t-SNE read."""
        return self.backbone(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features and the L2-normalised projector output (the embedding the heads read).

        The embedding is normalised in fp32 (a no-op for fp32 runs), for the reason in CosineHead.
        """
        features = self.backbone(x)
        return features, F.normalize(self.projector(features).float(), dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised projector output."""
        return self.encode(x)[1]

    def classify(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per-head logits of embeddings."""
        return [head(z) for head in self.heads]

    def forward(self, x: torch.Tensor | list[torch.Tensor], embedding_hook: EmbeddingHook | None = None):
        """Per-head logits of a batch, or heads x views x [N, C] logits of a list of views.

        Views go through ``forward`` (not a side method) so that DDP and torch.compile wrap
        the whole training forward. ``embedding_hook`` may replace view embeddings before the
        heads (the nearest-neighbour queue does).
        """
        if isinstance(x, torch.Tensor):
            return self.classify(self.embed(x))
        embeddings = self.embed_views(x)
        if embedding_hook is not None:
            embeddings = embedding_hook(embeddings)
        return self.classify_views(embeddings)

    def embed_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Embeddings per view; views of one size go through the network as one batch (as in
        DINO), which is faster and lets batch norm see every view of an image."""
        embeddings: list[torch.Tensor] = [None] * len(views)  # type: ignore[list-item]
        for indices in _groups_by_size(views):
            z = self.embed(torch.cat([views[i] for i in indices]))
            for i, chunk in zip(indices, z.chunk(len(indices))):
                embeddings[i] = chunk
        return embeddings

    def classify_views(self, embeddings: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        per_view = [self.classify(z) for z in embeddings]
        return [[logits[h] for logits in per_view] for h in range(len(self.heads))]


def _groups_by_size(views: list[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, v in enumerate(views):
        groups.setdefault(tuple(v.shape[1:]), []).append(i)
    return list(groups.values())
