"""What is computed from a trained run: features, the heads' evaluation and k-means baselines,
linear and kNN probes, and the optional second stage (refine)."""
