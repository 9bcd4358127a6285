"""The segmentation task for the training engine, one for any number of spatial axes:
batched torch augmentation, loss, per-patient-volume validation Dice (the monitored
metric ``val_dice``). The spatial dims are those of the batches (``(B, C, H, W)`` slices or
``(B, C, D, H, W)`` patches); the data view (:mod:`medlens.segment.views`) says whether
validation runs whole inputs or sliding windows (``window``).

Layering inside ``medlens.segment``: ``task`` uses ``predict`` (sliding-window inference
for whole-volume validation); ``workflow`` uses ``task``; nothing below imports upwards."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlens.segment.losses import create_loss
from medlens.segment.metrics import dice, iou, per_slice
from medlens.segment.predict import window_logits
from medlens.transforms.intensity import to_float

__all__ = ["SegmentAugment", "SegmentTask", "to_float"]


@dataclass
class SegmentAugment:
    """Augmentations applied to a whole batch at once (images and masks alike).

    Flips and a random affine (rotation, scale, shift) resample masks nearest-neighbour;
    intensity scale/shift touch images only. The spatial axes are the batch's: slices
    ``(B, C, H, W)`` flip left-right; volumes ``(B, C, D, H, W)`` flip each axis
    independently (nnU-Net's mirroring). Rotation, scale and shift act within the axial
    (H, W) plane only, the slice axis left alone, since slices are often much thicker than
    the in-plane pixels and a tilt would smear them.
    """

    flip: bool = True
    rotate_deg: float = 15.0
    scale: float = 0.1
    shift: float = 0.05
    intensity: float = 0.1
    # MRI/CT acquisition differences (nnU-Net-style, all off by default: a run draws no extra
    # random numbers unless one is set): gamma in [1/(1+g), 1+g], a smooth multiplicative
    # bias field of ± bias_field, Gaussian noise of std up to noise, blur of sigma up to blur px
    gamma: float = 0.0
    bias_field: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    # missing-modality augmentation: each channel of an item is, with this probability,
    # replaced by a copy of another channel (Kaggle LGG fills a missing pre-/post-contrast
    # sequence with FLAIR; a model that never saw that fails on such patients)
    channel_copy: float = 0.0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = x.ndim - 2
        if spatial not in (2, 3):
            raise ValueError(f"SegmentAugment: expected (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
        b, dev = x.shape[0], x.device
        per_item = (b,) + (1,) * (x.ndim - 1)  # broadcasts one value per batch item
        if self.flip:
            axes = flip_axes(spatial)
            f = (torch.rand(b, len(axes), generator=gen) < 0.5).to(dev)
            for k, axis in enumerate(axes):
                sel = f[:, k].view(per_item)
                x = torch.where(sel, x.flip(axis), x)
                y = torch.where(sel, y.flip(axis), y)
        if self.rotate_deg or self.scale or self.shift:
            grid = F.affine_grid(self._theta(b, spatial, gen).to(dev, x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if self.intensity:
            k = (torch.rand(b, 2, generator=gen) * 2 - 1).to(dev, x.dtype) * self.intensity
            x = x * (1 + k[:, :1].view(per_item)) + k[:, 1:].view(per_item)
        if self.gamma or self.bias_field or self.noise or self.blur:
            x = self._acquisition(x, gen)
        if self.channel_copy and x.shape[1] > 1:
            x = self._copy_channels(x, gen)
        return x, y

    def _copy_channels(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Each (item, channel) with probability ``channel_copy`` takes another channel's values."""
        b, c = x.shape[:2]
        hit = torch.rand(b, c, generator=gen) < self.channel_copy
        other = (torch.arange(c).view(1, c) + torch.randint(1, c, (b, c), generator=gen)) % c  # never itself
        src = torch.where(hit, other, torch.arange(c).view(1, c).expand(b, c)).to(x.device)
        idx = src.view(b, c, *([1] * (x.ndim - 2))).expand_as(x)
        return torch.gather(x, 1, idx)

    def _acquisition(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Gamma, bias field, blur and noise on images in ~[0, 1] (masks are untouched)."""
        b, dev, dt = x.shape[0], x.device, x.dtype
        per_item = (b,) + (1,) * (x.ndim - 1)
        if self.gamma:
            g = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * math.log1p(self.gamma)).to(dev, dt)
            x = x.clamp_min(0).pow(g.view(per_item))
        if self.bias_field:  # a random plane + quadratic in (H, W): smooth, slice-consistent
            h, w = x.shape[-2:]
            yy = torch.linspace(-1, 1, h, device=dev, dtype=dt).view(h, 1)
            xx = torch.linspace(-1, 1, w, device=dev, dtype=dt).view(1, w)
            c = ((torch.rand(b, 5, generator=gen) * 2 - 1) * self.bias_field).to(dev, dt)
            field = (c[:, 0, None, None] * yy + c[:, 1, None, None] * xx + c[:, 2, None, None] * yy * xx
                     + c[:, 3, None, None] * (yy**2 - 1 / 3) + c[:, 4, None, None] * (xx**2 - 1 / 3))
            x = x * torch.exp(field).view(b, *([1] * (x.ndim - 3)), h, w)
        if self.blur:
            x = _blur(x, (torch.rand(b, generator=gen) * self.blur).tolist())
        if self.noise:
            s = (torch.rand(b, generator=gen) * self.noise).to(dev, dt)
            x = x + torch.randn(x.shape, generator=gen).to(dev, dt) * s.view(per_item)
        return x

    def _theta(self, b: int, spatial: int, gen: torch.Generator | None) -> torch.Tensor:
        """Affine matrices ``(b, spatial, spatial + 1)`` of a rotation/scale/shift in the
        (H, W) plane; further axes (the slice axis) are left alone. ``affine_grid`` orders
        coordinates last axis first, (W, H[, D]): the plane is the first two rows."""
        r = torch.rand(b, 4, generator=gen) * 2 - 1
        ang = r[:, 0] * math.radians(self.rotate_deg)
        s = 1 + r[:, 1] * self.scale
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        theta = torch.zeros(b, spatial, spatial + 1)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, -1] = cos, -sin, r[:, 2] * self.shift * 2
        theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, -1] = sin, cos, r[:, 3] * self.shift * 2
        for k in range(2, spatial):
            theta[:, k, k] = 1.0
        return theta


def _blur(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """In-plane Gaussian blur of each item with its own sigma (px; below 0.3: untouched)."""
    out = []
    for xi, s in zip(x, sigmas):
        if s < 0.3:
            out.append(xi)
            continue
        r = max(1, int(math.ceil(2.5 * s)))
        t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-(t**2) / (2 * s * s))
        k = k / k.sum()
        flat = xi.reshape(-1, 1, *xi.shape[-2:])
        flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
        out.append(flat.reshape(xi.shape))
    return torch.stack(out)


def flip_axes(spatial: int) -> tuple[int, ...]:
    """Axes :class:`SegmentAugment` mirrors: left-right for slices, every axis of a volume."""
    return (-1,) if spatial == 2 else tuple(range(-spatial, 0))


@dataclass
class SegmentTask:
    """Binary lesion segmentation with a one-channel logit output, on 2 or 3 spatial axes.

    Training batches are dicts with ``image`` uint8 ``(B, C, *spatial)`` and ``mask`` uint8
    ``(B, 1, *spatial)``: slices ``(H, W)`` or patches ``(D, H, W)``. Validation batches add
    ``patient`` int64 codes; the items of one patient, in order, are that patient's volume
    (batches of slices, or one whole volume per batch). ``window``: ``None`` runs every
    validation batch through the network as it is; a size ``(D, H, W)`` runs sliding-window
    inference with it (whole volumes, trained on smaller patches), so early stopping
    watches the figure that is reported, not Dice on cherry-picked patches.

    ``validate`` returns ``val_dice`` (mean over patients of whole-volume Dice), ``val_iou``,
    ``val_slice_dice`` (mean over axial slices with a lesion) and ``val_loss`` (the loss of
    each batch, weighted by its items: per slice, or per volume).
    """

    loss: str = "dice_bce"
    threshold: float = 0.5
    augment: SegmentAugment | None = field(default_factory=SegmentAugment)
    window: tuple[int, ...] | None = None
    sw_batch_size: int = 4
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

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Validation logits of float input ``(B, C, *spatial)``: one forward, or sliding windows."""
        if self.window is None:
            return model(x)
        return window_logits(model, x, window=self.window, sw_batch_size=self.sw_batch_size)

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        model.eval()
        volumes: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}  # patient code → (preds, truths)
        slice_dice, loss_sum, items = [], 0.0, 0
        for batch in loader:
            x = to_float(batch["image"].to(device))
            logits = self.logits(model, x)
            loss_sum += float(self._loss_fn(logits, batch["mask"].to(device).float())) * len(x)
            items += len(x)
            pred = torch.sigmoid(logits.float())[:, 0].cpu().numpy() >= self.threshold
            truth = batch["mask"][:, 0].numpy()
            codes = batch["patient"].numpy() if "patient" in batch else np.zeros(len(x), np.int64)
            for code, p, t in zip(codes.tolist(), pred, truth):
                preds, truths = volumes.setdefault(code, ([], []))
                preds.append(p), truths.append(t)
            axial = truth.reshape(-1, *truth.shape[-2:])  # every axial slice of the batch
            lesion = axial.reshape(len(axial), -1).any(1)
            if lesion.any():
                slice_dice.append(per_slice(pred.reshape(axial.shape)[lesion], axial[lesion])["dice"])
        scores = [(dice(np.stack(p), np.stack(t)), iou(np.stack(p), np.stack(t))) for p, t in volumes.values()]
        lesion_dice = np.concatenate(slice_dice) if slice_dice else np.zeros(0)
        return {
            "val_dice": float(np.mean([d for d, _ in scores])) if scores else float("nan"),
            "val_iou": float(np.mean([j for _, j in scores])) if scores else float("nan"),
            "val_slice_dice": float(lesion_dice.mean()) if len(lesion_dice) else float("nan"),
            "val_loss": loss_sum / items if items else float("nan"),
        }
