"""The segmentation task for the training engine: batched torch augmentation, loss,
per-patient-volume validation Dice (the monitored metric ``val_dice``), and :class:`Fitted`,
what a 2D or 3D training step returns.

Layering inside ``medlens.segment``: ``task`` uses ``predict`` (sliding-window inference
for whole-volume validation); ``volumes`` and ``workflow`` use ``task``; nothing below
imports upwards."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlens.segment.losses import create_loss
from medlens.segment.metrics import dice, iou, per_patient, per_slice
from medlens.segment.predict import volume_logits
from medlens.transforms.intensity import to_float

__all__ = ["Fitted", "SegmentAugment", "SegmentTask", "SegmentTask3D", "to_float"]


@dataclass
class SegmentAugment:
    """Augmentations applied to a whole batch at once (images and masks alike).

    Flips and a random affine (rotation, scale, shift) resample masks nearest-neighbour;
    intensity scale/shift touch images only. 2D batches ``(B, C, H, W)`` flip left-right;
    3D batches ``(B, C, D, H, W)`` flip each axis independently (nnU-Net's mirroring) and
    rotate/scale/shift within the axial plane only, since slices are often much thicker
    than the in-plane pixels and a tilt would smear them.
    """

    flip: bool = True
    rotate_deg: float = 15.0
    scale: float = 0.1
    shift: float = 0.05
    intensity: float = 0.1

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim not in (4, 5):
            raise ValueError(f"SegmentAugment: expected (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
        b, dev = x.shape[0], x.device
        per_item = (b,) + (1,) * (x.ndim - 1)  # broadcasts one value per batch item
        if self.flip:  # 2D: left-right; 3D: every axis (nnU-Net's mirroring)
            axes = (-1,) if x.ndim == 4 else (-3, -2, -1)
            f = (torch.rand(b, len(axes), generator=gen) < 0.5).to(dev)
            for k, axis in enumerate(axes):
                sel = f[:, k].view(per_item)
                x = torch.where(sel, x.flip(axis), x)
                y = torch.where(sel, y.flip(axis), y)
        if self.rotate_deg or self.scale or self.shift:
            grid = F.affine_grid(self._theta(b, x.ndim, gen).to(dev, x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if self.intensity:
            k = (torch.rand(b, 2, generator=gen) * 2 - 1).to(dev, x.dtype) * self.intensity
            x = x * (1 + k[:, :1].view(per_item)) + k[:, 1:].view(per_item)
        return x, y

    def _theta(self, b: int, ndim: int, gen: torch.Generator | None) -> torch.Tensor:
        """Affine matrices of a rotation/scale/shift in the (H, W) plane; in 3D the slice
        axis is left alone (``affine_grid`` orders 3D coordinates (W, H, D))."""
        r = torch.rand(b, 4, generator=gen) * 2 - 1
        ang = r[:, 0] * math.radians(self.rotate_deg)
        s = 1 + r[:, 1] * self.scale
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        tx, ty = r[:, 2] * self.shift * 2, r[:, 3] * self.shift * 2
        if ndim == 4:
            return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        zero, one = torch.zeros(b), torch.ones(b)
        return torch.stack([torch.stack([cos, -sin, zero, tx], 1), torch.stack([sin, cos, zero, ty], 1),
                            torch.stack([zero, zero, one, zero], 1)], 1)


@dataclass
class SegmentTask:
    """Binary lesion segmentation with a one-channel logit output.

    Batches are dicts with ``image`` uint8 ``(B, C, H, W)``, ``mask`` uint8
    ``(B, 1, H, W)`` and (validation) ``patient`` int64 codes. ``validate`` returns
    ``val_dice`` (mean over patients of whole-volume Dice), ``val_iou``,
    ``val_slice_dice`` (mean over lesion slices) and ``val_loss``.
    """

    loss: str = "dice_bce"
    threshold: float = 0.5
    augment: SegmentAugment | None = field(default_factory=SegmentAugment)
    monitor: str = "val_dice"
    mode: str = "max"
    _loss_fn: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._loss_fn = create_loss(self.loss, num_classes=1)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        x = to_float(batch["image"].to(device, non_blocking=True))
        y = batch["mask"].to(device, non_blocking=True).float()
        if self.augment is not None:
            x, y = self.augment(x, y)
        return self._loss_fn(model(x), y)

    @torch.no_grad()
    def predict_loader(self, model: nn.Module, loader: Any, device: torch.device
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Probabilities ``(N, H, W)``, truth masks, patient codes and the mean loss."""
        probs, truths, pats, losses = [], [], [], []
        for batch in loader:
            x = to_float(batch["image"].to(device))
            logits = model(x)
            y = batch["mask"].to(device).float()
            losses.append(float(self._loss_fn(logits, y)) * len(x))
            probs.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
            truths.append(batch["mask"][:, 0].numpy())
            pats.append(batch["patient"].numpy() if "patient" in batch else np.zeros(len(x), np.int64))
        p, t, c = np.concatenate(probs), np.concatenate(truths), np.concatenate(pats)
        return p, t, c, sum(losses) / max(len(p), 1)

    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        model.eval()
        prob, truth, pats, loss = self.predict_loader(model, loader, device)
        pred = prob >= self.threshold
        rows = per_patient(pred, truth, pats, full=False)
        sl = per_slice(pred, truth)
        lesion = truth.reshape(len(truth), -1).any(1)
        return {
            "val_dice": float(np.mean([r["dice"] for r in rows.values()])),
            "val_iou": float(np.mean([r["iou"] for r in rows.values()])),
            "val_slice_dice": float(sl["dice"][lesion].mean()) if lesion.any() else float("nan"),
            "val_loss": loss,
        }


@dataclass
class SegmentTask3D(SegmentTask):
    """3D lesion segmentation: the same loss and augmentation on patch batches, whole-volume
    validation.

    Training batches are dicts with ``image`` uint8 ``(B, C, D, H, W)`` and ``mask`` uint8
    ``(B, 1, D, H, W)`` (see :class:`medlens.segment.volumes.PatchLoader`). Validation
    iterates ``(patient, image (C, D, H, W), mask (D, H, W))`` over whole volumes and
    predicts each by sliding-window inference with ``patch``, so early stopping watches the
    figure that is reported (whole-volume Dice per patient), not Dice on cherry-picked
    patches. ``val_loss`` is the loss of each whole volume, averaged over patients.
    """

    patch: tuple[int, int, int] = (32, 64, 64)
    sw_batch_size: int = 4

    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        model.eval()
        dices, ious, losses, slice_dice = [], [], [], []
        for _pid, image, mask in loader:
            logits = volume_logits(model, image, patch=self.patch, sw_batch_size=self.sw_batch_size,
                                   device=device)
            y = torch.from_numpy(np.ascontiguousarray(mask)[None, None]).to(logits.device).float()
            losses.append(float(self._loss_fn(logits, y)))
            pred = (torch.sigmoid(logits)[0, 0] >= self.threshold).cpu().numpy()
            dices.append(dice(pred, mask))
            ious.append(iou(pred, mask))
            lesion = mask.reshape(len(mask), -1).any(1)
            if lesion.any():
                slice_dice.append(per_slice(pred[lesion], mask[lesion])["dice"])
        return {
            "val_dice": float(np.mean(dices)) if dices else float("nan"),
            "val_iou": float(np.mean(ious)) if ious else float("nan"),
            "val_slice_dice": float(np.concatenate(slice_dice).mean()) if slice_dice else float("nan"),
            "val_loss": float(np.mean(losses)) if losses else float("nan"),
        }


@dataclass
class Fitted:
    """What a 2D or 3D training step (``workflow._fit_slices``, ``volumes.fit_volumes``)
    hands to the shared tail of :func:`medlens.segment.workflow.train_segmentation`."""

    model: Any
    result: Any
    eval_split: str
    rows: dict[str, dict[str, float]]
    report_slices: Any
    report_probs: np.ndarray
    problems: list[Any]
    counts: dict[str, Any]
    input_meta: dict[str, Any]
    postprocess: dict[str, Any] = field(default_factory=lambda: {"rule": "none"})
