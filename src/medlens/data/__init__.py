"""Data sets as users hold them: layouts, manifests, splits, caches, synthetic data."""
