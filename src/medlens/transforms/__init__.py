"""Deterministic preprocessing (applied once, at cache time) and batched augmentation."""

from medlens.transforms.augment import AugmentConfig, augment_batch
from medlens.transforms.preprocess import PreprocessConfig, preprocess_image

__all__ = ["AugmentConfig", "PreprocessConfig", "augment_batch", "preprocess_image"]
