# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Pre-training a Self-Classifier
#
# Self-Classifier (Amrani et al., ECCV 2022) learns to classify images into `C` classes without
# labels: two augmented views of an image must be put into the same class, and a softmax over
# the *batch* (column temperature) makes using every class cheaper than using one, so the loss
# itself does not favour the trivial solution. The optimiser can still reach it (a far too
# high learning rate does): a run whose scored head uses far fewer clusters than it has says so
# in a warning below, in metrics.json and in the study's summary.
#
# This notebook pre-trains (or resumes) one run per seed and plots their training curves
# (Fig. 1 of this study). Rerunning it with the same parameters continues where the runs
# stopped; finished runs are not trained again. With `train = False` it only reads runs that
# finished elsewhere (on a GPU machine, say), so neither the data set nor a checkpoint is needed.
#
# The recipe comes from `sclib/recipes/<preset>/<dataset>.yaml`; `config_overrides` changes any
# of its values. The defaults train the fast digits recipe once (about a minute on a CPU); the
# committed study (`python -m sclib study`) trains three seeds.

# %% tags=["parameters"]
dataset = "digits"  # digits, mnist, fashion_mnist, cifar10, cifar20, stl10 or imagefolder
preset = "fast"  # fast (CPU minutes), gpu (GPU minutes) or seed (the seed report's 800 epochs)
run_dir = None  # None: ../runs/lab/<dataset>; one run folder per seed inside; rerunning resumes
seeds = [0]  # the study runs three
config_overrides = {}  # any training parameter, e.g. {"epochs": 10, "row_tau": 0.07}
config_file = None  # a recipe YAML or a run's config.json to start from instead of the preset
train = True  # False: report finished runs without training

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from sclib.report import notebook as report
from sclib.report import plots
from sclib.train import prepare_runs

report.check_parameters(dataset=dataset, preset=preset, run_dir=run_dir, seeds=seeds, config_overrides=config_overrides,
                        config_file=config_file, train=train)

# %%
run_dir = run_dir or report.lab_folder(dataset)
configs = prepare_runs(dataset, preset, run_dir, seeds, config_overrides, config_file, train)
runs = report.open_runs(run_dir, dataset)
display(Markdown(report.config_markdown(configs[0], [cfg.seed for cfg in configs])))
display(Markdown(report.warnings_markdown(runs)))

# %% [markdown]
# ## The scored head at the end of training
#
# The scored head is the one with as many clusters as the data set has classes; the numbers are
# fractions on the eval split (notebook 03 has the full table).

# %%
report.final_metrics(runs)

# %% [markdown]
# ## Training curves (Fig. 1)
#
# How to read them: the **loss** should fall steadily after the warm-up; the **learning rate**
# panel shows the warm-up and cosine schedule; **clusters used** counts the distinct classes the
# scored head assigns during training and should stay at the number of classes (dashed line):
# a drop is the collapse that the column softmax is meant to prevent. **Throughput** is in
# images per second (each image gives two or more views). The bold line is the mean over seeds
# with a band of one standard deviation; each seed is a thin line.

# %%
history = report.read_history(runs)
fig = plots.training_curves(history, num_classes=report.class_count(runs))
report.save(fig, report.figures_dir(run_dir), "fig1_training")
