"""What a reader sees: evaluation tables, plots, the notebooks' helpers, summary pages, the front
page, and the study and sweep runners that execute the notebooks."""
