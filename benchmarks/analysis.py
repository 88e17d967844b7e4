"""Where a study's analysis (notebooks 02-05) spends its time, per phase, before and after (issue 24).

On one checkpoint of a real run (``--run``, its newest checkpoint; or ``--checkpoint``), on the
run's own data, in one process so that both sides meet the same machine:

* feature extraction of the train and eval splits: **before** fp32 contiguous (what probes ran),
  **after** the run's precision (``features.predict``: bf16 autocast + channels-last on a CPU
  with native bf16); img/s, and how far the probes' numbers move between the two;
* the linear probe on those features: **before** the straightforward per-step loop at the
  process's thread count (``straightforward_linear_probe`` below, also the reference of
  tests/test_probe.py), **after** ``probe.linear_probe``; seconds and top-1 of both;
* the kNN probe; k-means on features and on pixels at several ``n_init`` (seconds, ACC);
  t-SNE and UMAP at several subsample sizes (notebook 04 draws ``max_points`` = 2000).

    PYTHONPATH=. python benchmarks/analysis.py --run runs/val/c10-small16-e36
    PYTHONPATH=. python benchmarks/analysis.py --run R --probe-epochs 10 --quick   # a few minutes less

Seconds are wall time of this process; the machine's speed varies, so compare rows of one run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans

from sclib.core.metrics import cluster_metrics, topk_accuracy
from sclib.eval.checks import l2_normalise
from sclib.eval.features import predict
from sclib.eval.probe import knn_probe, linear_probe
from sclib.report import notebook as report
from sclib.run.build import augment_config, load_data, load_model
from sclib.run.paths import open_run

# k-means (n_init, dtype): scikit-learn's float64 with 10 starts was the evaluation's setting
KMEANS_VARIANTS = {False: [(10, np.float64), (10, np.float32), (3, np.float32), (1, np.float32)],
                   True: [(10, np.float64), (3, np.float32)]}


def straightforward_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor,
                                 eval_y: torch.Tensor, num_classes: int, epochs: int, batch_size: int = 512,
                                 lr: float = 4e-4, seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """The linear probe as first written: a per-step loop that sets the cosine lr from its explicit
    formula, indexes each batch and steps a for-loop AdamW, at whatever thread count torch has.
    Returns the eval scores [M, C] and the lr of every step."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.0, foreach=False)
    total = epochs * math.ceil(len(train_x) / batch_size)
    step, lrs = 0, []
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(train_x), batch_size):
            idx = order[start:start + batch_size]
            lrs.append(0.5 * lr * (1 + math.cos(math.pi * step / total)))
            optimizer.param_groups[0]["lr"] = lrs[-1]
            loss = torch.nn.functional.cross_entropy(layer(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    with torch.no_grad():
        return layer(eval_x), lrs


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def row(phase: str, variant: str, seconds: float, result: str = "") -> None:
    print(f"| {phase} | {variant} | {seconds:.1f} | {result} |", flush=True)


def probe_rows(train_x: torch.Tensor, eval_x: torch.Tensor, train_y: torch.Tensor, eval_y: torch.Tensor,
               classes: int, epochs: int, seed: int, label: str) -> tuple[float, float]:
    """Time the linear probe before and after and the kNN probe on one set of features; print
    their rows; return the linear (after) and kNN top-1."""
    (scores, _), before_s = timed(lambda: straightforward_linear_probe(
        train_x, train_y, eval_x, eval_y, classes, epochs, seed=seed))
    before = topk_accuracy(scores.numpy(), eval_y.numpy(), ks=(1,))["top1"]
    after, after_s = timed(lambda: linear_probe(train_x, train_y, eval_x, eval_y, classes, epochs=epochs, seed=seed))
    phase = f"linear probe ({epochs} epochs), {label} features"
    row(phase, "before: per-step loop", before_s, f"top-1 {100 * before:.2f}")
    row(phase, "after: probe.linear_probe", after_s, f"top-1 {100 * after['top1']:.2f}")
    knn, knn_s = timed(lambda: knn_probe(train_x, train_y, eval_x, eval_y, classes))
    row(f"kNN probe, {label} features", "", knn_s, f"top-1 {100 * knn['top1']:.2f}")
    return after["top1"], knn["top1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder (its newest checkpoint is used)")
    parser.add_argument("--checkpoint", default=None, help="another checkpoint of the run")
    parser.add_argument("--probe-epochs", type=int, default=100, help="the study's 100")
    parser.add_argument("--quick", action="store_true", help="fewer k-means / t-SNE variants")
    args = parser.parse_args(argv)
    cfg, _ = open_run(args.run)
    (data, load_s) = timed(lambda: load_data(cfg))
    model, epoch = load_model(args.run, data.info, args.checkpoint)
    aug = augment_config(cfg, data.info)
    classes = len(data.info.classes)
    print(f"run {args.run}, epoch {epoch}: {cfg.backbone} width {cfg.small_width}, {cfg.image_size} px; "
          f"{len(data.train_images)} train + {len(data.eval_images)} eval images; torch threads "
          f"{torch.get_num_threads()}")
    print()
    print("| phase | variant | seconds | result |")
    print("|---|---|---:|---|")
    row("load data", "", load_s)
    images = torch.cat([data.train_images, data.eval_images])
    feats = {}
    for variant, amp in (("before: fp32, contiguous", False), ("after: the run's precision", cfg.amp)):
        preds, seconds = timed(lambda amp=amp: predict(model, images, aug, amp=amp, heads=False))
        model.to(memory_format=torch.contiguous_format)
        feats[amp] = torch.from_numpy(preds.features)
        row("features, train + eval", variant, seconds, f"{len(images) / seconds:,.0f} img/s")
    n = len(data.train_images)
    results: dict[str, dict[bool, float]] = {"linear": {}, "knn": {}}
    for amp, x in feats.items():
        linear, knn = probe_rows(x[:n], x[n:], data.train_labels, data.eval_labels, classes, args.probe_epochs,
                                 cfg.seed, "bf16" if amp else "fp32")
        results["linear"][amp], results["knn"][amp] = linear, knn
    labels = data.eval_labels.numpy()
    eval_features = l2_normalise(feats[cfg.amp][n:].numpy())
    pixels = data.eval_images.reshape(len(labels), -1).float().numpy() / 255.0
    for name, x in (("features", eval_features), ("pixels", pixels)):
        for n_init, dtype in KMEANS_VARIANTS[args.quick]:
            for seed in ((0,) if args.quick else (0, 1)):
                km, seconds = timed(lambda x=x, n_init=n_init, dtype=dtype, seed=seed: KMeans(
                    n_clusters=classes, n_init=n_init, random_state=seed).fit_predict(x.astype(dtype)))
                row(f"k-means on {name}", f"n_init {n_init}, {np.dtype(dtype).name}, seed {seed}", seconds,
                    f"ACC {100 * cluster_metrics(labels, km)['acc']:.2f}")
    for method in ("tsne", "umap"):
        for points in ((2000,) if args.quick else (1000, 2000, 5000)):
            idx = report.subsample(len(labels), points, 0)
            (_, parts), seconds = timed(lambda idx=idx, method=method: report.embed_2d(eval_features[idx], method))
            row(report.EMBEDDINGS[method], f"{len(idx)} points", seconds,
                f"import {parts['import_s']:.1f} s, fit {parts['fit_s']:.1f} s")
    print()
    for probe in ("linear", "knn"):
        moved = 100 * (results[probe][cfg.amp] - results[probe][False])
        print(f"{probe} probe top-1, the run's precision against fp32 features: {moved:+.2f} points")


if __name__ == "__main__":
    sys.exit(main())
