"""sclib: Self-Classifier (Amrani, Karlinsky, Bronstein, ECCV 2022) for small image data sets."""

__version__ = "0.1.0"
