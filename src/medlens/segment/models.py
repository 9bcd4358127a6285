"""U-Nets in the shared model registry (2D and 3D through ``spatial_dims``).

Every model maps ``(B, in_channels, *spatial)`` float input to logits
``(B, num_classes, *spatial)``; for binary lesion masks ``num_classes=1`` (sigmoid).
Spatial sides must be divisible by ``2 ** (levels - 1)`` (16 for the defaults); the
predictor pads. None of these use ``channels_last`` (measured ~9× slower training for
MONAI's UNet on CPU, see PERFORMANCE_NOTES).
"""

from __future__ import annotations

from typing import Any

from medlens.models.registry import register_model


def _monai_unet(num_classes: int, in_channels: int, spatial_dims: int,
                channels: tuple[int, ...], num_res_units: int, dropout: float = 0.0,
                norm: str = "batch") -> Any:
    from monai.networks.nets import UNet

    model = UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                 channels=channels, strides=(2,) * (len(channels) - 1),
                 num_res_units=num_res_units, dropout=dropout, norm=norm)
    # the last decoder block before the output conv: model.model[1].submodule... is
    # deep; the first level's upsampling path ends at model.model[2]
    model.cam_layer = "model.2"
    return model


@register_model("unet", family="unet")
def unet(*, num_classes: int = 1, in_channels: int = 3, spatial_dims: int = 2,
         channels: tuple[int, ...] = (16, 32, 64, 128, 256), num_res_units: int = 2,
         dropout: float = 0.0) -> Any:
    """MONAI ``UNet`` (residual units), 5 levels 16…256 by default."""
    return _monai_unet(num_classes, in_channels, spatial_dims, tuple(channels), num_res_units, dropout)


def _classic_unet(num_classes: int, in_channels: int, spatial_dims: int,
                  features: tuple[int, ...], dropout: float) -> Any:
    from monai.networks.nets import BasicUNet

    model = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                      features=features, norm=("batch", {}), dropout=dropout)
    model.cam_layer = "upcat_1"
    return model


@register_model("unet_lgg", family="unet")
def unet_lgg(*, num_classes: int = 1, in_channels: int = 3, spatial_dims: int = 2,
             dropout: float = 0.0) -> Any:
    """The original LGG project's Keras U-Net: 4 down levels 32-64-128-256 (two 3×3
    conv + BN + ReLU, max-pool), a 512 bottleneck, transposed-conv up path with skip
    concatenation, 1×1 output conv; sigmoid applied by the loss / predictor.
    Built as MONAI ``BasicUNet(features=(32, 64, 128, 256, 512, 32))``."""
    return _classic_unet(num_classes, in_channels, spatial_dims, (32, 64, 128, 256, 512, 32), dropout)


@register_model("unet_small", family="unet")
def unet_small(*, num_classes: int = 1, in_channels: int = 3, spatial_dims: int = 2,
               dropout: float = 0.0) -> Any:
    """The ``unet_lgg`` shape at half width (16…256): ~4× fewer FLOPs, for CPU training."""
    return _classic_unet(num_classes, in_channels, spatial_dims, (16, 32, 64, 128, 256, 16), dropout)


@register_model("test_unet", family="unet")
def test_unet(*, num_classes: int = 1, in_channels: int = 3, spatial_dims: int = 2) -> Any:
    """Tiny 3-level UNet (4-8-16) for tests; sides divisible by 4."""
    return _monai_unet(num_classes, in_channels, spatial_dims, (4, 8, 16), 0)


@register_model("basic_unet", family="unet")
def basic_unet(*, num_classes: int = 1, in_channels: int = 3, spatial_dims: int = 2,
               features: tuple[int, ...] = (32, 32, 64, 128, 256, 32), dropout: float = 0.0) -> Any:
    """MONAI ``BasicUNet`` (sides divisible by 16)."""
    from monai.networks.nets import BasicUNet

    model = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                      features=tuple(features), dropout=dropout)
    model.cam_layer = "upcat_1"
    return model


@register_model("dynunet", family="unet")
def dynunet(*, num_classes: int = 1, in_channels: int = 3, spatial_dims: int = 2,
            filters: tuple[int, ...] = (16, 32, 64, 128, 256)) -> Any:
    """MONAI ``DynUNet`` (nnU-Net's architecture), 3×3 kernels, stride 2 per level."""
    from monai.networks.nets import DynUNet

    n = len(filters)
    model = DynUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                    kernel_size=[3] * n, strides=[1] + [2] * (n - 1),
                    upsample_kernel_size=[2] * (n - 1), filters=list(filters), res_block=True)
    model.cam_layer = f"upsamples.{n - 2}"
    return model


def divisor(model: Any) -> int:
    """Spatial sides the model needs to be divisible by."""
    cfg = getattr(model, "medlens_config", {}) or {}
    name = cfg.get("name", getattr(model, "medlens_name", ""))
    if name == "ensemble":
        return max(divisor(m) for m in model.members)
    if name == "mirror":
        return divisor(model.inner)
    if name == "test_unet":
        return 4
    return 16


def init_output_bias(model: Any, foreground_fraction: float) -> bool:
    """Set the last convolution's bias to the prior log-odds of a lesion pixel.

    A fresh U-Net predicts ~0.5 everywhere; with lesions covering ~1 % of pixels it then
    spends hundreds of Adam steps (each moving a bias by ~lr) just learning "background".
    Starting from the prior (as in the focal-loss paper) lets the first steps learn shape.
    Returns whether a bias was set.
    """
    import math

    import torch
    from torch import nn

    p = min(max(float(foreground_fraction), 1e-4), 0.5)
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs or convs[-1].bias is None:
        return False
    with torch.no_grad():
        convs[-1].bias.fill_(math.log(p / (1 - p)))
    return True
