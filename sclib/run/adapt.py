"""Recipes that adapt to a user's own image folder: size, views, heads and epochs from the data.

An ImageFolder can hold 500 icons or 100k photos, grayscale or colour, 8 px or 500 px, so no
fixed recipe fits. A recipe file may carry an ``adapt:`` block; its rules are applied here,
after the recipe's fixed values and before the user's own flags (which always win, and which
the rules take as given: an explicit ``--image-size`` changes the epochs the budget buys).

The CPU budget rests on a measured cost: the small CNN (width 16) with batched augmentation
costs about ``SECONDS_PER_VIEW_PIXEL`` seconds per image, view and pixel of the view on one
core of this project's 2-core reference machine (tuning runs of MNIST at 14 px and digits at
8 px, results/tuning.md), growing with the square of the width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib.data import FolderSummary, summarize_image_folder
from sclib.run.config import fit_keep_epochs

# Training cost of the small CNN of width 16, per image, view and view pixel, one core.
SECONDS_PER_VIEW_PIXEL = 1.8e-6
REFERENCE_WIDTH = 16
RULES = ("heads_per_class", "image_size", "augment_by_channels", "cpu_minutes", "epochs", "extra_views")


@dataclass(frozen=True)
class Adapted:
    """The values the rules chose, and one line per choice saying why."""

    values: dict[str, Any]
    reasons: list[str]

    def note(self) -> str:
        return "; ".join(self.reasons)


def epoch_seconds(images: int, image_size: int, views: int, width: int = REFERENCE_WIDTH) -> float:
    """Estimated CPU seconds of one pre-training epoch of the small CNN (one core)."""
    return images * views * image_size**2 * SECONDS_PER_VIEW_PIXEL * (width / REFERENCE_WIDTH) ** 2


def adapt(rules: dict[str, Any], values: dict[str, Any], fixed: dict[str, Any], data_root: str | Path) -> Adapted:
    """Apply a recipe's ``adapt`` rules to the folder at ``data_root``; ``fixed`` holds the user's flags."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"unknown adapt rule(s) {unknown}; known: {', '.join(RULES)}")
    folder = summarize_image_folder(data_root)
    out: dict[str, Any] = {}
    reasons = [f"the folder: {folder.train_images} train images in {len(folder.classes)} classes, "
               f"{'grayscale' if folder.channels == 1 else 'colour'}, about {folder.native_size} px"]

    def choose(name: str, value: Any, why: str) -> Any:
        if name in fixed:
            return fixed[name]
        out[name] = value
        reasons.append(f"{name} {value}: {why}")
        return value

    if "heads_per_class" in rules:
        c = len(folder.classes)
        choose("heads", [k * c for k in rules["heads_per_class"]], f"{rules['heads_per_class']} times the {c} classes")
    if "augment_by_channels" in rules:
        style = rules["augment_by_channels"][folder.channels]
        choose("augment", style, "grayscale: affine views (no flips or crops that cut a shape away)"
               if folder.channels == 1 else "colour: the BYOL crops, flips and colour jitter")
    size = values.get("image_size")
    if "image_size" in rules:
        r = rules["image_size"]
        size = choose("image_size", _image_size(folder, **r),
                      f"the native {folder.native_size} px, halved above {r['halve_above']} px, "
                      f"within {r['lowest']}-{r['highest']} px")
    if "cpu_minutes" in rules:
        _fit_budget(rules, folder, {**values, **out, **fixed, "image_size": fixed.get("image_size", size)},
                    choose)
    return Adapted(out, reasons)


def _image_size(folder: FolderSummary, halve_above: int, lowest: int, highest: int) -> int:
    """Small images keep their size; larger ones are halved (a CPU run buys epochs with pixels), within bounds."""
    native = folder.native_size
    return native if native <= halve_above else max(lowest, min(highest, round(native / 2)))


def _fit_budget(rules: dict[str, Any], folder: FolderSummary, values: dict[str, Any], choose) -> None:
    """Spend the CPU budget on extra views first (they steady small sets), then on epochs."""
    budget = 60.0 * rules["cpu_minutes"]
    lo, hi = rules["epochs"]["min"], rules["epochs"]["max"]
    size, width = values["image_size"], values.get("small_width", REFERENCE_WIDTH)
    extra = values.get("local_crops", 0)
    if "extra_views" in rules:
        affordable = budget / epoch_seconds(folder.train_images, size, 2 + rules["extra_views"], width)
        extra = rules["extra_views"] if affordable >= hi else 0
        extra = choose("local_crops", extra, f"{'spare' if extra else 'no spare'} budget for extra views "
                                             f"({affordable:.0f} epochs of {2 + rules['extra_views']} views fit)")
    cost = epoch_seconds(folder.train_images, size, 2 + extra, width)
    epochs = int(max(lo, min(hi, math.floor(budget / cost))))
    epochs = choose("epochs", epochs, f"about {rules['cpu_minutes']} CPU-minutes at an estimated {cost:.1f} s "
                                      f"an epoch (clamped to {lo}-{hi})")
    choose("warmup_epochs", max(1, round(epochs / 30)), "about 3 % of the epochs")
    choose("keep_epochs", fit_keep_epochs([], epochs), "four checkpoints spread over the run for the probe curve")
