"""The classification task: batches of uint8 images + labels → cross-entropy.

Images arrive as ``(B, C, H, W)`` uint8 from the cache; the task converts, augments
(training only) and normalises them on the training device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn

from medlens.transforms.augment import AugmentConfig, augment_batch


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights, normalised to mean 1 (absent classes get weight 0)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return w / w[counts > 0].mean()


def auc_medmnist(y: np.ndarray, probs: np.ndarray) -> float:
    """MedMNIST's AUC: binary → AUC of class 1; multi-class → mean one-vs-rest AUC."""
    try:
        if probs.shape[1] == 2:
            return float(roc_auc_score(y, probs[:, 1]))
        present = [k for k in range(probs.shape[1]) if 0 < (y == k).sum() < len(y)]
        return float(np.mean([roc_auc_score(y == k, probs[:, k]) for k in present]))
    except ValueError:
        return float("nan")


class ClassificationTask:
    """Cross-entropy classification with batched augmentation and normalisation."""

    def __init__(
        self,
        *,
        num_classes: int,
        mean: Iterable[float],
        std: Iterable[float],
        augment: AugmentConfig | None = None,
        weights: np.ndarray | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        monitor: str = "val_auc",
        mode: Literal["max", "min"] = "max",
    ) -> None:
        self.num_classes = num_classes
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment or AugmentConfig(enabled=False)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self.monitor = monitor
        self.mode = mode

    def prepare(self, images: torch.Tensor, device: torch.device, *, train: bool) -> torch.Tensor:
        x = images.to(device, non_blocking=True).float().div_(255.0)
        if train:
            x = augment_batch(x, self.augment)
        x = (x - self.mean.to(device)) / self.std.to(device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        x = self.prepare(batch["image"], device, train=True)
        y = batch["label"].to(device, non_blocking=True)
        w = None if self.weights is None else self.weights.to(device)
        return F.cross_entropy(model(x), y, weight=w, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def logits(self, model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
        model.eval()
        outs = [model(self.prepare(b["image"], device, train=False)).float().cpu() for b in loader]
        return torch.cat(outs) if outs else torch.empty(0, self.num_classes)

    def validate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:  # noqa: ANN001
        labels = torch.cat([b["label"] for b in loader]).numpy()
        return classification_scores(labels, self.logits(model, loader, device))


def classification_scores(labels: np.ndarray, logits: torch.Tensor) -> dict[str, float]:
    """Validation loss, accuracy, balanced accuracy and AUC of ``logits`` ``(N, K)`` against ``labels``."""
    probs = torch.softmax(logits, 1).numpy()
    pred = probs.argmax(1)
    return {
        "val_loss": float(F.cross_entropy(logits, torch.as_tensor(labels))),
        "val_acc": float((pred == labels).mean()),
        "val_balanced_acc": float(balanced_accuracy_score(labels, pred)),
        "val_auc": auc_medmnist(labels, probs),
    }
