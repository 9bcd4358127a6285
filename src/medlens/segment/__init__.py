"""Segmentation: layouts, U-Nets, losses, metrics, training task, prediction, report."""
