"""What the shared training engine runs for a patient-level MIL model: the end-to-end task
(:class:`MILTask`, one bag of cell images per step), the frozen-encoder task
(:class:`HeadTask` on cached features, fed by :class:`FeatureLoader`), and per-bag
prediction from cells or from features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlens.mil.bags import BagLoader, Bags, CellInput


class MILTask:
    """The engine's task: one bag per step, weighted cross-entropy on the patient's label;
    validation loss (smoother than AUC on a handful of patients) is monitored."""

    monitor = "val_loss"
    mode = "min"

    def __init__(self, cell_input: CellInput, class_weights: torch.Tensor, *, augment: bool = True) -> None:
        self.cell_input, self.weights, self.augment = cell_input, class_weights, augment

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        logits, _ = model.forward_bag(self.cell_input(batch["x"], device, augment=self.augment))
        return F.cross_entropy(logits[None], batch["y"].to(device), weight=self.weights.to(device))

    def validate(self, model: nn.Module, loader: BagLoader, device: torch.device) -> dict[str, float]:
        probs, _ = predict_bags(model, loader.bags, self.cell_input, device)
        return bag_scores(loader.bags.labels, probs)


class FeatureLoader:
    """One bag of cached encoder features per step: ``{"f": (n, F) float, "y": (1,), "bag": (1,)}``
    (the frozen-encoder recipe; shuffled per epoch, ``max_cells`` drawn per bag as :class:`BagLoader`)."""

    def __init__(self, bags: Bags, features: np.ndarray, *, shuffle: bool = False,
                 max_cells: int | None = None) -> None:
        self.bags, self.features, self.shuffle, self.max_cells = bags, features, shuffle, max_cells

    def __len__(self) -> int:
        return len(self.bags)

    def __iter__(self) -> Any:
        order = np.random.permutation(len(self.bags)) if self.shuffle else np.arange(len(self.bags))
        for i in order:
            idx = self.bags.members[i]
            if self.max_cells and len(idx) > self.max_cells:
                idx = np.sort(np.random.choice(idx, self.max_cells, replace=False))
            yield {"f": torch.from_numpy(self.features[idx]), "y": torch.tensor([int(self.bags.labels[i])]),
                   "bag": torch.tensor([int(i)])}


class HeadTask:
    """The engine's task of the frozen-encoder recipe: only the bag head trains, on cached
    features; weighted cross-entropy per bag, validation loss monitored (as :class:`MILTask`)."""

    monitor = "val_loss"
    mode = "min"

    def __init__(self, class_weights: torch.Tensor) -> None:
        self.weights = class_weights

    def training_step(self, head: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        logits, _ = head.forward_bag(batch["f"].to(device))
        return F.cross_entropy(logits[None], batch["y"].to(device), weight=self.weights.to(device))

    def validate(self, head: nn.Module, loader: FeatureLoader, device: torch.device) -> dict[str, float]:
        probs, _ = predict_features(head, loader.bags, loader.features, device)
        return bag_scores(loader.bags.labels, probs)


def bag_scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Validation loss, accuracy and (both classes present) AUC of per-bag probabilities."""
    loss = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-7)), torch.from_numpy(y)))
    out = {"val_loss": loss, "val_accuracy": float(np.mean(probs.argmax(1) == y))}
    if len(np.unique(y)) > 1:
        from sklearn.metrics import roc_auc_score

        out["val_auc"] = float(roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else
                               roc_auc_score(y, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))
    return out


@torch.no_grad()
def predict_features(head: nn.Module, bags: Bags, features: np.ndarray,
                     device: torch.device | str = "cpu") -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`predict_bags` from cached encoder features ``(N, F)`` (rows as ``bags.images``)."""
    was = head.training
    head.eval()
    probs, att = [], []
    for i in range(len(bags)):
        logits, a = head.forward_bag(torch.from_numpy(features[bags.members[i]]).to(device))
        probs.append(torch.softmax(logits.float(), 0).cpu().numpy())
        att.append(a.float().cpu().numpy())
    head.train(was)
    return (np.stack(probs) if probs else np.empty((0, 0))), att


@torch.no_grad()
def predict_bags(model: nn.Module, bags: Bags, cell_input: CellInput,
                 device: torch.device | str = "cpu") -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities ``(P, K)`` and each bag's attention ``(n_i,)`` (sums to 1)."""
    was = model.training
    model.eval()
    probs, att = [], []
    for i in range(len(bags)):
        logits, a = model.forward_bag(cell_input(torch.from_numpy(bags.cells(i)), device))
        probs.append(torch.softmax(logits.float(), 0).cpu().numpy())
        att.append(a.float().cpu().numpy())
    model.train(was)
    return (np.stack(probs) if probs else np.empty((0, 0))), att
