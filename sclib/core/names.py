"""The names a run's parameters may take (data sets, networks, optimisers, augmentations), without torch.

``sclib.run.config`` checks and documents every parameter with these, and the command line imports
``config`` to build its parser: taking the names from the modules that implement them imported
torch, torchvision and scikit-learn, and ``python -m sclib --help`` took 7 s. The implementing
modules keep their own registries; a test checks that each holds exactly the names listed here.
"""

from __future__ import annotations

# sclib.data.REGISTRY
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar20", "stl10", "imagefolder")
# sclib.core.model.BACKBONES
BACKBONES: tuple[str, ...] = ("resnet18", "small", "stride2_stem", "small_resnet", "wide_late", "airbench")
# sclib.core.optim.OPTIMIZERS
OPTIMIZERS: tuple[str, ...] = ("sgd", "lars", "adamw")
# sclib.core.augment: the view recipes
STYLES: tuple[str, ...] = ("byol", "affine")
# sclib.core.model: the heads' gain, "fixed" at 1 (cosine logits) or "learned" from 1 as the official weight_norm heads
CLS_GAINS: tuple[str, ...] = ("fixed", "learned")
