"""Write notebooks/01-06 from the text below (no outputs, stable cell ids).

Edit here and rerun (`python scripts/make_notebooks.py`) rather than editing the .ipynb files,
so the notebooks stay thin, consistent and free of outputs in git.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

SETUP = """%matplotlib inline
import pandas as pd
from IPython.display import Markdown, display

from sclib import plots, report"""


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def params(text: str):
    cell = code(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["01_pretrain"] = [
    md("""
# 01 · Pre-training a Self-Classifier

Self-Classifier (Amrani et al., ECCV 2022) learns to classify images into `C` classes without
labels: two augmented views of an image must be put into the same class, and a softmax over
the *batch* (column temperature) keeps every class in use, so the trivial solution of one
class for all is ruled out by the loss itself.

This notebook pre-trains (or resumes) one run folder and plots its training curves
(Fig. 1 of this study). Rerunning it with the same parameters continues where the run stopped;
a finished run is not trained again.

The seed report trained a ResNet-18 for 800 epochs (batch 512, SGD with a 10-epoch warm-up to
lr 0.4 and cosine decay, temperatures 0.1 / 0.05). The default parameters below are a
quick CPU check on `digits` (a few epochs of a small CNN), not that recipe: use
`preset = "seed"` on a GPU for the real thing.
"""),
    params("""
dataset = "digits"  # one of sclib.config.DATASETS
preset = "fast"  # "fast" (CPU-sized) or "seed" (the seed report's recipe)
run_dir = "../runs/notebooks/digits"  # the run folder; rerunning resumes it
epochs = 8  # a quick look; None: the preset's (e.g. 800 with preset "seed")
batch_size = None  # None: the preset's
image_size = None  # None: the preset's (digits 8, MNIST 28, CIFAR 32, STL-10 96)
mlp_hidden = None  # None: the preset's
milestones = None  # epochs kept for the probe curve (None: spread over the run)
device = "auto"
seed = 0
config_overrides = {}  # any other sclib.config.Config field, e.g. {"row_tau": 0.07}
"""),
    code(SETUP + "\nfrom sclib.train import pretrain"),
    code("""
cfg = report.run_config(dataset, preset, run_dir, epochs=epochs, batch_size=batch_size, image_size=image_size,
                       mlp_hidden=mlp_hidden, milestones=milestones, device=device, seed=seed, **config_overrides)
display(Markdown(report.config_markdown(cfg, preset)))
"""),
    md("""
## Training

`pretrain` trains the epochs still to do, saves a checkpoint per epoch (and keeps the
milestones), and finally evaluates the evaluated head (the one with as many clusters as there
are classes) on the eval split. The numbers below are fractions.
"""),
    code("""
metrics = pretrain(cfg, progress=False)
pd.Series(metrics).to_frame("value")
"""),
    md("""
## Training curves (Fig. 1)

How to read them: the **loss** should fall steadily after the warm-up; the **learning rate**
panel shows the warm-up and cosine schedule; **clusters used** counts the distinct classes the
evaluated head assigns during training and should stay at the number of classes (red line):
a drop is the collapse that the column softmax is meant to prevent. **Throughput** is in
images per second (two views each).
"""),
    code("""
history = report.read_history(run_dir)
fig = plots.training_curves(history, num_classes=report.class_count(cfg))
report.save(fig, report.figures_dir(run_dir), "fig1_training")
"""),
    code("""
history.tail()
"""),
]

NOTEBOOKS["02_linear_probe"] = [
    md("""
# 02 · Linear and kNN probes against pre-training epochs

A probe measures how much label information the frozen backbone features carry, independently
of the classification heads: a **linear probe** (one linear layer, AdamW, cosine decay) and a
**kNN probe** (cosine similarity, 20 neighbours, temperature-weighted votes) are fitted on the
train split's features of every milestone checkpoint and scored on the eval split.

The seed report's Fig. 2 plots linear-probe top-1 and top-3 accuracy against pre-training
epochs and finds it converging near epoch 500 of 800 (100 probe epochs each). The defaults
here use fewer probe epochs (`probe_epochs`), so the linear probe is under-trained; the kNN
probe needs no training and is the fairer read of a short run.
"""),
    params("""
dataset = "digits"
run_dir = "../runs/notebooks/digits"  # written by notebook 01
probe_epochs = 20  # the seed uses 100
device = "auto"
"""),
    code(SETUP + "\nfrom sclib.probe import probe_run"),
    code("""
cfg = report.open_study_run(run_dir, dataset)
rows = probe_run(run_dir, all_milestones=True, epochs=probe_epochs, device=device)
probes = pd.DataFrame(rows)
probes.pivot(index="epoch", columns="probe", values=["top1", "top3"]).round(4)
"""),
    md("""
## Probe accuracy against pre-training epochs (Fig. 2)

How to read it: each point is one milestone checkpoint. Rising curves mean the features are
still improving; a plateau is where more pre-training stops paying. Top-3 is always at least
top-1; a large gap means classes are confused with a few neighbours rather than at random.
"""),
    code("""
fig = plots.probe_curves(probes)
report.save(fig, report.figures_dir(run_dir), "fig2_probe")
"""),
]

NOTEBOOKS["03_clustering_metrics"] = [
    md("""
# 03 · Clustering metrics

The study's headline numbers: how well the evaluated head's classes (the head with as many
clusters as there are classes) agree with the true labels on the eval split, as NMI, AMI, ARI
and ACC (accuracy after the best one-to-one matching of clusters to classes, Hungarian
algorithm). The k-means baselines (k = number of classes) on the backbone features and on raw
pixels are the bars the heads have to clear.

The seed report's Table 1 gives, for a ResNet-18 after 800 epochs, e.g. MNIST 81.9 % ACC and
CIFAR-10 60.7 % ACC. `digits` has no row of its own; MNIST is shown as the nearest stand-in.
"""),
    params("""
dataset = "digits"
run_dir = "../runs/notebooks/digits"  # written by notebook 01
device = "auto"
"""),
    code(SETUP + "\nfrom sclib.evaluate import evaluate_run\nfrom sclib.metrics import confusion_after_matching"),
    code("""
cfg = report.open_study_run(run_dir, dataset)
evaluation = evaluate_run(run_dir, device=device)
display(Markdown(plots.metrics_table_markdown(report.clustering_rows(evaluation, dataset, cfg.epochs), label="run (percent)")))
"""),
    md("""
## Every head

Self-Classifier trains several heads at once (over-clustering heads with 2x, 4x, 8x the
classes). Only the evaluated head has a meaningful ACC; NMI/AMI of the larger heads say how
consistently they split classes into sub-clusters. "used" counts non-empty clusters.
"""),
    code("""
display(Markdown(plots.metrics_table_markdown(report.heads_rows(evaluation), label="head (percent)")))
"""),
    md("""
## Confusion matrix after Hungarian matching

Rows are true classes, columns the clusters renamed by their matched class; the colour is the
fraction of each true class. A strong diagonal is a good clustering; an off-diagonal block
shows two classes merged into one cluster (and then another cluster has to split a class).
"""),
    code("""
view = report.load_view(run_dir, dataset, device)
cm = confusion_after_matching(view.labels, view.assigned)
fig = plots.confusion_matrix_plot(cm, view.class_names)
report.save(fig, view.figures, "confusion")
"""),
]

NOTEBOOKS["04_embeddings"] = [
    md("""
# 04 · Embeddings of the backbone features

t-SNE (scikit-learn) and UMAP (umap-learn) of the (L2-normalised) backbone features of the
eval split, coloured by the **true class** and by the **predicted cluster** of the evaluated
head (the seed report's Fig. 4a shows the t-SNE on STL-10 coloured by class). Then the number
of eval images per predicted cluster against the uniform count (Fig. 4b; 800 per class on the
STL-10 test set in the seed report, which found the classes close to uniform).

How to read them: separated groups of one colour in the class picture mean the features
separate the classes; if the cluster picture shows the same groups with different colours,
the heads have found them too. The embeddings distort distances between groups: read
neighbourhoods, not gaps. Large eval sets are subsampled to `max_points`.
"""),
    params("""
dataset = "digits"
run_dir = "../runs/notebooks/digits"  # written by notebook 01
max_points = 2000  # t-SNE / UMAP subsample
device = "auto"
seed = 0
"""),
    code(SETUP),
    code("""
view = report.load_view(run_dir, dataset, device)
idx = report.subsample(len(view.labels), max_points, seed)
clusters = [f"cluster {c}" for c in range(view.head_size)]
print(f"{len(idx)} of {len(view.labels)} eval images, features of width {view.features.shape[1]}")
"""),
    md("## t-SNE (Fig. 4a)"),
    code("""
xy, seconds = report.embed_2d(view.features[idx], "tsne", seed)
print(f"t-SNE: {seconds['fit_s']:.1f} s")
report.save(plots.embedding_scatter(xy, view.labels[idx], view.class_names, title="t-SNE, true class"),
           view.figures, "fig4a_tsne")
"""),
    code("""
report.save(plots.embedding_scatter(xy, view.assigned[idx], clusters, title="t-SNE, predicted cluster"),
           view.figures, "fig4a_tsne_clusters")
"""),
    md("## UMAP\n\nUMAP's first use compiles numba code; the import and fit times are printed."),
    code("""
xy, seconds = report.embed_2d(view.features[idx], "umap", seed)
print(f"UMAP: import {seconds['import_s']:.1f} s, fit {seconds['fit_s']:.1f} s")
report.save(plots.embedding_scatter(xy, view.labels[idx], view.class_names, title="UMAP, true class"),
           view.figures, "fig4a_umap")
"""),
    code("""
report.save(plots.embedding_scatter(xy, view.assigned[idx], clusters, title="UMAP, predicted cluster"),
           view.figures, "fig4a_umap_clusters")
"""),
    md("""
## Samples per predicted cluster (Fig. 4b)

The column softmax pushes towards equal-size classes. Bars far above the red line are
clusters that absorb several classes; empty or tiny bars are classes the head has given up.
"""),
    code("""
report.save(plots.cluster_histogram(view.assigned, view.head_size), view.figures, "fig4b_histogram")
"""),
]

NOTEBOOKS["05_cluster_images"] = [
    md("""
# 05 · What the clusters contain

Example eval images of the most and the least accurate clusters of the evaluated head, each
titled with its matched class (Hungarian matching; the majority class for unmatched clusters)
and its purity (the fraction of its images that belong to that class). The seed report's
Fig. 3 shows such grids for STL-10 and CIFAR-20: good clusters are clean, bad ones often mix
classes that look alike (similar shapes, colours or backgrounds). Clusters with fewer than 5
images are left out when possible, since a tiny cluster is trivially pure.
"""),
    params("""
dataset = "digits"
run_dir = "../runs/notebooks/digits"  # written by notebook 01
clusters_per_grid = 3
images_per_cluster = 10
device = "auto"
seed = 0
"""),
    code(SETUP),
    code("""
view = report.load_view(run_dir, dataset, device)
table = report.cluster_table(view.labels, view.assigned, view.class_names)
pd.DataFrame(table).set_index("cluster").round(3)
"""),
    md("## The most accurate clusters (Fig. 3, top)"),
    code("""
best, worst = report.best_and_worst(table, clusters_per_grid)
report.save(plots.cluster_grid(view.images, report.grid_rows(best, view.assigned, images_per_cluster, seed)),
           view.figures, "fig3_clusters_best")
"""),
    md("## The least accurate clusters (Fig. 3, bottom)"),
    code("""
report.save(plots.cluster_grid(view.images, report.grid_rows(worst, view.assigned, images_per_cluster, seed)),
           view.figures, "fig3_clusters_worst")
"""),
]

NOTEBOOKS["06_ablations"] = [
    md("""
# 06 · Ablations

Reads a sweep of runs (one run folder per variant, made by
`python -m sclib sweep --dataset NAME --grid ablations.yaml`) and tabulates them in the layout
of the seed report's Table 2: batch size, head sets, temperatures and multi-crop, each changed
alone from the base recipe. The seed's own Table 2 (STL-10, 300 epochs each) is printed below
for comparison; its base was batch 512, heads [10, 20, 40, 80], temperatures (0.10, 0.05), and
its best variant, temperatures (0.07, 0.05), is the STL-10 row of Table 1.

With the default parameters and no sweep in `sweep_dir`, this notebook builds a tiny one
itself (three variants of `epochs` epochs): enough to test the pipeline, far too short to rank
variants. Finished variants are skipped, so rerunning is cheap.
"""),
    params("""
dataset = "digits"
preset = "fast"
sweep_dir = "../runs/notebooks/sweep-digits"  # one run folder per variant
grid = None  # YAML grid (e.g. "../ablations.yaml"); None: a tiny built-in grid
epochs = 2  # None: the grid's / preset's
device = "auto"
config_overrides = {}  # any other sclib.config.Config field, applied to every variant
"""),
    code(SETUP + "\nfrom sclib import sweep"),
    code("""
done = sweep.run_sweep(dataset, grid, sweep_dir, preset, log=lambda m: None, epochs=epochs, device=device,
                       **config_overrides)
pd.DataFrame(done)
"""),
    md("## This sweep (percent; the last column is the seed's ACC for the same variant on STL-10)"),
    code("""
table = sweep.ablation_table(sweep_dir)
display(Markdown(sweep.ablation_markdown(table)))
"""),
    md("## The seed report's Table 2 (STL-10, ResNet-18, 300 epochs, percent)"),
    code("""
display(Markdown(sweep.seed_table2_markdown()))
"""),
    md("""
## ACC per variant (Fig. 5)

The red bar and the dashed line are the base variant: bars to the right of the line beat it.
Differences of a point or two are within seed-to-seed noise for short runs.
"""),
    code("""
baseline = "base" if "base" in set(table["variant"]) else None
report.save(plots.ablation_bars(table, "acc", baseline=baseline), report.figures_dir(sweep_dir), "fig5_ablations")
"""),
    code("""
report.save(plots.ablation_bars(table, "nmi", baseline=baseline), report.figures_dir(sweep_dir), "fig5_ablations_nmi")
"""),
]


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(name, cells), out / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
