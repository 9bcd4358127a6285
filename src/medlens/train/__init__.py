"""One training engine for every task (classification, segmentation, detection)."""
