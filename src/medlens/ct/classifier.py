"""The 3D CNN that scores crops (nodule vs not; malignant vs benign) and its augmentation.

:class:`CropNet` is the book's ``LunaModel`` shape: a BatchNorm on the raw input, four blocks
of two 3×3×3 convolutions + ReLU and a 2× max-pool, then a linear head; global average
pooling before the head makes it indifferent to the crop size (32×48×48 in the book, smaller
in the demo). It is registered as ``ct_crop_cnn`` (and the tiny ``test_ct_crop_cnn``) so a
package rebuilds it by name.

:func:`augment_crops` is batched (one ``affine_grid``/``grid_sample`` for the whole batch):
mirror along the three axes, shift, scale, rotation about the head-foot (I) axis, noise —
the book's augmentation, in torch rather than per item.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medlens.models.registry import register_model


class CropNet(nn.Module):
    """``(B, C, D, H, W)`` crops → ``(B, num_classes)`` logits."""

    def __init__(self, num_classes: int = 2, in_channels: int = 1, channels: tuple[int, ...] = (8, 16, 32, 64),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm3d(in_channels)
        blocks: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            blocks.append(nn.Sequential(
                nn.Conv3d(prev, ch, 3, padding=1, bias=False), nn.BatchNorm3d(ch), nn.ReLU(inplace=True),
                nn.Conv3d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm3d(ch), nn.ReLU(inplace=True),
                nn.MaxPool3d(2, ceil_mode=True)))
            prev = ch
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(prev, num_classes)
        self.cam_layer = f"blocks.{len(channels) - 1}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.input_norm(x))
        return self.head(self.dropout(torch.flatten(self.pool(x), 1)))


@register_model("ct_crop_cnn", family="cnn", spatial_dims=(3,), head="head",
                description="3D CNN on CT crops (LUNA16 book's LunaModel): nodule / malignancy stages")
def ct_crop_cnn(*, num_classes: int = 2, in_channels: int = 1, spatial_dims: int = 3,
                channels: tuple[int, ...] = (8, 16, 32, 64), dropout: float = 0.0) -> CropNet:
    """3D CNN for lung-CT crops: 4 conv blocks (8-16-32-64), global pooling, linear head."""
    if spatial_dims != 3:
        raise ValueError(f"ct_crop_cnn is a 3D network; got spatial_dims={spatial_dims}")
    return CropNet(num_classes, in_channels, tuple(channels), dropout)


@register_model("test_ct_crop_cnn", family="cnn", spatial_dims=(3,), head="head")
def test_ct_crop_cnn(*, num_classes: int = 2, in_channels: int = 1, spatial_dims: int = 3) -> CropNet:
    """Tiny 3D crop CNN (4-8) for tests."""
    return CropNet(num_classes, in_channels, (4, 8))


class CropAugment(BaseModel):
    """Random transforms of training crops (all off when ``enabled`` is False)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    mirror: bool = True
    shift: float = Field(0.1, ge=0, le=0.5, description="± fraction of each side")
    scale: float = Field(0.2, ge=0, le=0.5, description="± relative zoom")
    rotate: bool = Field(True, description="any angle about the head-foot (I) axis")
    noise: float = Field(0.02, ge=0, le=0.5, description="Gaussian noise std on the 0–1 intensity scale")
    # intensity: a network trained on phantoms must not lock onto the phantoms' exact HU values,
    # noise texture or edge sharpness (real scanners differ in calibration, kernel and dose)
    hu_shift: float = Field(0.04, ge=0, le=0.5, description="± offset on the 0–1 scale (0.04 ≈ ±56 HU in the "
                            "default window)")
    contrast: float = Field(0.15, ge=0, le=0.9, description="± relative contrast about the lung level")
    correlated_noise: float = Field(0.03, ge=0, le=0.5, description="largest std of spatially correlated "
                                    "(3-voxel) noise, like a sharp reconstruction kernel's grain")
    blur: float = Field(0.7, ge=0, le=1, description="largest weight of a 3-voxel box blur mixed in (partial "
                        "volume, smooth kernels)")


def augment_crops(x: torch.Tensor, cfg: CropAugment) -> torch.Tensor:
    """Augment a batch ``(B, C, D, H, W)`` of crops (0–1 intensities) in one resampling.

    ``affine_grid`` coordinates are (x, y, z) = (C, R, I) axes; the rotation acts in the
    (x, y) plane, i.e. about the I (head-foot) axis, as the book's augmentation does.
    """
    if not cfg.enabled:
        return x
    b, dev = x.shape[0], x.device
    theta = torch.zeros(b, 3, 4, device=dev)
    scale = 1.0 + (torch.rand(b, device=dev) * 2 - 1) * cfg.scale
    angle = torch.rand(b, device=dev) * 2 * math.pi if cfg.rotate else torch.zeros(b, device=dev)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 2, 2] = 1.0
    theta[:, :, :3] *= scale[:, None, None]
    if cfg.mirror:
        flips = torch.where(torch.rand(b, 3, device=dev) < 0.5, -1.0, 1.0)
        theta[:, :, :3] = theta[:, :, :3] * flips[:, None, :]
    theta[:, :, 3] = (torch.rand(b, 3, device=dev) * 2 - 1) * cfg.shift * 2  # grid spans [-1, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _augment_intensity(out, cfg) if cfg.noise or cfg.hu_shift or cfg.contrast or cfg.blur \
        or cfg.correlated_noise else out


#: The lung level on the 0–1 scale of the default window (-1000…400 HU): ≈ -860 HU.
_LUNG_LEVEL = 0.1


def _augment_intensity(x: torch.Tensor, cfg: CropAugment) -> torch.Tensor:
    """Per crop: blur of random strength, contrast about the lung level, offset, white and
    correlated noise of random strength — batched, no loop over crops."""
    b, dev = x.shape[0], x.device

    def per_crop(limit: float) -> torch.Tensor:
        return torch.rand(b, 1, 1, 1, 1, device=dev) * limit

    if cfg.blur:
        blurred = F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
        x = torch.lerp(x, blurred, per_crop(cfg.blur))
    if cfg.contrast:
        x = (x - _LUNG_LEVEL) * (1 + (per_crop(2.0) - 1) * cfg.contrast) + _LUNG_LEVEL
    if cfg.hu_shift:
        x = x + (per_crop(2.0) - 1) * cfg.hu_shift
    if cfg.noise:
        x = x + torch.randn_like(x) * per_crop(cfg.noise)
    if cfg.correlated_noise:
        grain = F.avg_pool3d(torch.randn_like(x), 3, stride=1, padding=1) * math.sqrt(27.0)
        x = x + grain * per_crop(cfg.correlated_noise)
    return x


@torch.inference_mode()
def score_crops(model: nn.Module, crops: Any, *, batch_size: int = 64, device: torch.device | str = "cpu",
                positive: int = 1) -> Any:
    """Probability of class ``positive`` for crops ``(N, D, H, W)`` (numpy float, 0–1), batched."""
    import numpy as np

    model.eval()
    out = []
    for i in range(0, len(crops), batch_size):
        x = torch.as_tensor(np.asarray(crops[i : i + batch_size]), dtype=torch.float32, device=device)[:, None]
        out.append(torch.softmax(model(x).float(), 1)[:, positive].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
