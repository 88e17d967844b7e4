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
# # 04 · Embeddings of the backbone features
#
# t-SNE (scikit-learn) and UMAP (umap-learn) of the (L2-normalised) backbone features of the
# eval split, coloured by the **true class** and by the **predicted cluster** of the scored
# head (the seed report's Fig. 4a shows the t-SNE on STL-10 coloured by class). Then the number
# of eval images per predicted cluster against the uniform count (Fig. 4b; 800 per class on the
# STL-10 test set in the seed report, which found the classes close to uniform).
#
# How to read them: separated groups of one colour in the class picture mean the features
# separate the classes; if the cluster picture shows the same groups with different colours,
# the heads have found them too. The embeddings distort distances between groups: read
# neighbourhoods, not gaps. Large eval sets are subsampled to `max_points`. The features are
# the float16 copy `evaluate` exported for the first seed (`show_seed` picks another).

# %% tags=["parameters"]
dataset = "digits"
run_dir = None  # None: ../runs/lab/<dataset>, where notebook 01 trains
max_points = 2000  # t-SNE / UMAP subsample
show_seed = None  # None: the first seed
device = "auto"
seed = 0  # of the subsample, t-SNE and UMAP

# %%
# %matplotlib inline
from IPython.display import display

from sclib.eval.evaluate import ensure_evaluated
from sclib.report import notebook as report
from sclib.report import plots

report.check_parameters(dataset=dataset, run_dir=run_dir, max_points=max_points, show_seed=show_seed, device=device,
                        seed=seed)

# %%
run_dir = run_dir or report.lab_folder(dataset)
cfg, paths = report.pick_run(report.open_runs(run_dir, dataset), show_seed)
view = report.load_view(cfg, paths, ensure_evaluated(cfg, paths, device))
idx = report.subsample(len(view.labels), max_points, seed)
figures = report.figures_dir(run_dir)
print(f"seed {cfg.seed}: {len(idx)} of {len(view.labels)} eval images")

# %% [markdown]
# ## t-SNE (Fig. 4a)
#
# Coloured by true class, then by the scored head's cluster.

# %%
display(*report.embedding_figures(view, idx, "tsne", figures, seed))

# %% [markdown]
# ## UMAP
#
# UMAP's first use compiles numba code; the import and fit times are printed.

# %%
display(*report.embedding_figures(view, idx, "umap", figures, seed))

# %% [markdown]
# ## Samples per predicted cluster (Fig. 4b)
#
# The column softmax pushes towards equal-size classes. Bars far above the dashed line are
# clusters that absorb several classes; empty or tiny bars are classes the head has given up.

# %%
report.save(plots.cluster_histogram(view.assigned, view.head_size), figures, "fig4b_histogram")
