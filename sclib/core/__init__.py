"""The method: backbones, projector and cosine heads, the loss, views, the nearest-neighbour queue,
optimiser and schedule, clustering metrics. Knows no data set, no run folder, no report."""
