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
# # 05 · What the clusters contain
#
# Example eval images of the most and the least accurate clusters of the scored head, each
# titled with its matched class (Hungarian matching; the majority class for unmatched clusters)
# and its purity (the fraction of its images that belong to that class). The seed report's
# Fig. 3 shows such grids for STL-10 and CIFAR-20: good clusters are clean, bad ones often mix
# classes that look alike (similar shapes, colours or backgrounds). Clusters with fewer than 5
# images are left out when possible, since a tiny cluster is trivially pure. The images are the
# few per cluster that `evaluate` exported, so the data set itself is not needed here.

# %% tags=["parameters"]
dataset = "digits"
run_dir = None  # None: ../runs/lab/<dataset>, where notebook 01 trains
clusters_per_grid = 3
images_per_cluster = 10  # at most 10 (what evaluate exports per cluster)
show_seed = None  # None: the first seed
device = "auto"
seed = 0

# %%
# %matplotlib inline
import pandas as pd

from sclib.eval.evaluate import ensure_evaluated
from sclib.report import notebook as report
from sclib.report import plots

report.check_parameters(dataset=dataset, run_dir=run_dir, clusters_per_grid=clusters_per_grid,
                        images_per_cluster=images_per_cluster, show_seed=show_seed, device=device, seed=seed)

# %%
run_dir = run_dir or report.lab_folder(dataset)
cfg, paths = report.pick_run(report.open_runs(run_dir, dataset), show_seed)
view = report.load_view(cfg, paths, ensure_evaluated(cfg, paths, device))
table = report.cluster_table(view.labels, view.assigned, view.class_names)
pd.DataFrame(table).set_index("cluster").round(3)

# %% [markdown]
# ## The most accurate clusters (Fig. 3, top)

# %%
best, worst = report.best_and_worst(table, clusters_per_grid)
rows = report.grid_rows(best, view.assigned, view.sample_index, images_per_cluster, seed)
report.save(plots.cluster_grid(view.sample_images, rows), report.figures_dir(run_dir), "fig3_clusters_best")

# %% [markdown]
# ## The least accurate clusters (Fig. 3, bottom)

# %%
rows = report.grid_rows(worst, view.assigned, view.sample_index, images_per_cluster, seed)
report.save(plots.cluster_grid(view.sample_images, rows), report.figures_dir(run_dir), "fig3_clusters_worst")
