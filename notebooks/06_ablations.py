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
# # 06 · Ablations
#
# Reads a sweep (one folder per variant, one run per seed inside, made by
# `python -m sclib sweep --dataset NAME --grid ablations.yaml --seeds 0 1`) and tabulates it in
# the layout of the seed report's Table 2: batch size, head sets, temperatures and multi-crop,
# each changed alone from the base recipe, as mean ± standard deviation over seeds. The seed's
# own Table 2 (STL-10, 300 epochs each, one run per variant) is printed below for comparison;
# its base was batch 512, heads [10, 20, 40, 80], temperatures (0.10, 0.05), and its best
# variant, temperatures (0.07, 0.05), is the STL-10 row of Table 1.
#
# With the default parameters this notebook builds a tiny sweep itself (three variants of
# two epochs): enough to test the pipeline, far too short to rank variants. Finished runs are
# skipped, so rerunning is cheap.

# %% tags=["parameters"]
dataset = "digits"
preset = "fast"
sweep_dir = None  # None: ../runs/lab/sweep-<dataset>; one folder per variant, one run per seed inside
grid = None  # YAML grid (e.g. "../ablations.yaml"); None: a tiny built-in grid
seeds = [0]
config_overrides = {"epochs": 2}  # applied to every variant, under the variant's own values
train = True  # False: only tabulate what the sweep already trained

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from sclib.report import ablations, plots, sweep
from sclib.report import notebook as report
from sclib.run.config import Recipe

report.check_parameters(dataset=dataset, preset=preset, sweep_dir=sweep_dir, grid=grid, seeds=seeds,
                        config_overrides=config_overrides, train=train)

# %%
sweep_dir = sweep_dir or report.lab_folder(f"sweep-{dataset}")
if train:
    done = sweep.run_sweep(Recipe(dataset, preset, overrides=config_overrides), grid, sweep_dir, seeds, log=print)
table = ablations.ablation_table(sweep_dir)

# %% [markdown]
# ## This sweep (percent, mean ± std over seeds; the last column is the seed's ACC for the same variant on STL-10)

# %%
display(Markdown(ablations.ablation_markdown(table)))

# %% [markdown]
# ## The seed report's Table 2 (STL-10, ResNet-18, 300 epochs, percent)

# %%
display(Markdown(ablations.seed_table2_markdown()))

# %% [markdown]
# ## ACC per variant (Fig. 5)
#
# The red bar and the dashed line are the base variant: bars to the right of the line beat it.
# The error bars are one standard deviation over seeds; differences smaller than them are noise.

# %%
baseline = "base" if "base" in set(table["variant"]) else None
report.save(plots.ablation_bars(table, "acc", baseline=baseline), report.figures_dir(sweep_dir), "fig5_ablations")

# %% [markdown]
# ## Every metric per variant
#
# Each cell is the mean ± std over seeds (percent); the colour is the difference from the base
# variant in points: red rows help, blue rows hurt, across NMI, AMI, ARI and ACC at once.

# %%
report.save(plots.ablation_heatmap(table, baseline=baseline), report.figures_dir(sweep_dir), "fig5_ablations_grid")
