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
# # 03 · Clustering metrics
#
# The study's headline numbers: how well the scored head's classes (the head with as many
# clusters as there are classes) agree with the true labels on the eval split, as NMI, AMI, ARI
# and ACC (accuracy after the best one-to-one matching of clusters to classes, Hungarian
# algorithm), per seed and as mean ± standard deviation over seeds. The k-means baselines
# (k = number of classes) on the backbone features and on raw pixels are the bars the heads
# have to clear.
#
# The seed report's Table 1 gives, for a ResNet-18 after 800 epochs, e.g. MNIST 81.9 % ACC and
# CIFAR-10 60.7 % ACC. `digits` and Fashion-MNIST have no row of their own; MNIST is shown as the
# nearest stand-in. Evaluations already in a run folder (`python -m sclib evaluate`) are read as
# they are. Where every seed was also refined (`python -m sclib refine`, a second stage after
# Self-Classifier), its rows follow Self-Classifier's own, which is what the seed's row compares with.

# %% tags=["parameters"]
dataset = "digits"
run_dir = None  # None: ../runs/lab/<dataset>, where notebook 01 trains
device = "auto"

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from sclib.core.metrics import confusion_after_matching
from sclib.eval.evaluate import ensure_evaluated
from sclib.report import notebook as report
from sclib.report import plots, summary, tables

report.check_parameters(dataset=dataset, run_dir=run_dir, device=device)

# %%
run_dir = run_dir or report.lab_folder(dataset)
runs = report.open_runs(run_dir, dataset)
evaluations = [ensure_evaluated(cfg, paths, device) for cfg, paths in runs]
display(Markdown(tables.clustering_table(evaluations, dataset, summary.second_stage(runs)).markdown()))
display(Markdown(report.warnings_markdown(runs)))

# %% [markdown]
# ## Every head
#
# Self-Classifier trains several heads at once (over-clustering heads with 2x, 4x, 8x the
# classes). Only the scored head has a meaningful ACC; NMI/AMI of the larger heads say how
# consistently they split classes into sub-clusters. "clusters used" counts non-empty clusters.
# Each number is the mean over seeds, as in the study's summary.

# %%
display(Markdown(tables.heads_table(evaluations).markdown()))

# %% [markdown]
# ## Confusion matrix after Hungarian matching
#
# Rows are true classes, columns the clusters renamed by their matched class; the colour is the
# fraction of each true class. A strong diagonal is a good clustering; an off-diagonal block
# shows two classes merged into one cluster (and then another cluster has to split a class).
# First seed.

# %%
view = report.load_view(*runs[0], evaluations[0])
cm = confusion_after_matching(view.labels, view.assigned)
fig = plots.confusion_matrix_plot(cm, view.class_names)
report.save(fig, report.figures_dir(run_dir), "confusion")
