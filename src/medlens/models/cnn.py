"""Small from-scratch CNNs: the IDC project's CancerNet, the melanoma project's CNN,
LeNet-5, and tiny ``test_*`` variants for fast end-to-end runs.

All take ``(B, C, H, W)`` (or ``(B, C, D, H, W)`` with ``spatial_dims=3``) and return
logits ``(B, num_classes)``. An adaptive pooling layer before the dense head makes any
input size work while keeping the original head size at the original input size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from medlens.errors import ConfigError
from medlens.models.registry import register_model

#: Hidden-layer activations the CNNs here accept (``model.activation``); ReLU is every
#: network's original and the default. SELU is used as is (no AlphaDropout or LeCun init).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
                                           "silu": nn.SiLU}


def activation_layer(name: str) -> nn.Module:
    """A new activation module by name (``ConfigError`` with the valid names otherwise)."""
    from medlens.options import look_up_option

    return ACTIVATIONS[look_up_option(str(name), ACTIVATIONS, what="activation")]()


def layer_types(spatial_dims: int) -> dict[str, type[nn.Module]]:
    """Conv / BatchNorm / pooling classes for 2D or 3D networks."""
    if spatial_dims == 2:
        return {
            "conv": nn.Conv2d,
            "bn": nn.BatchNorm2d,
            "maxpool": nn.MaxPool2d,
            "avgpool": nn.AdaptiveAvgPool2d,
        }
    if spatial_dims == 3:
        return {
            "conv": nn.Conv3d,
            "bn": nn.BatchNorm3d,
            "maxpool": nn.MaxPool3d,
            "avgpool": nn.AdaptiveAvgPool3d,
        }
    raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


class SeparableConv(nn.Sequential):
    """Keras ``SeparableConv2D``: depthwise k×k (no bias) then pointwise 1×1 (bias), 'same'."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, spatial_dims: int = 2):
        conv = layer_types(spatial_dims)["conv"]
        super().__init__(
            OrderedDict(
                depthwise=conv(
                    in_ch, in_ch, kernel_size, padding=kernel_size // 2, groups=in_ch, bias=False
                ),
                pointwise=conv(in_ch, out_ch, 1, bias=True),
            )
        )


class CancerNet(nn.Module):
    """CancerNet (Rosebrock's Keras IDC model) with SeparableConv blocks.

    Blocks of ``depths[i]`` × (SeparableConv → ReLU (or ``activation``) → BN) at ``widths[i]`` channels,
    each followed by MaxPool(2) and Dropout(0.25); then AdaptiveAvgPool to
    ``pool_size`` (6 = the Keras feature map at 50 px, so the head is the original one),
    Flatten → Dense(``dense``) → ReLU → BN → Dropout(0.5) → Dense(num_classes).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        spatial_dims: int = 2,
        widths: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (1, 2, 3),
        dense: int = 256,
        pool_size: int = 6,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        activation_layer(activation)  # an unknown name fails before any layer is built
        if len(widths) != len(depths) or not widths:
            raise ConfigError(f"widths {widths} and depths {depths} must have the same length")
        t = layer_types(spatial_dims)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        ch = in_channels
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
            units: list[nn.Module] = []
            for _ in range(depth):
                units += [SeparableConv(ch, width, 3, spatial_dims), activation_layer(activation), t["bn"](width)]
                ch = width
            layers[f"block{i}"] = nn.Sequential(*units)
            layers[f"pool{i}"] = t["maxpool"](2)
            layers[f"drop{i}"] = nn.Dropout(0.25)
        self.features = nn.Sequential(layers)
        self.pool = t["avgpool"](pool_size)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * pool_size**spatial_dims, dense),
            activation_layer(activation),
            nn.BatchNorm1d(dense),
            nn.Dropout(0.5),
            nn.Linear(dense, num_classes),
        )
        self.cam_layer = f"features.block{len(widths)}"

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


class PlainCNN(nn.Module):
    """Conv(→BN)→ReLU (or ``activation``)→MaxPool blocks, adaptive pool, MLP head (melanoma CNN, LeNet, test)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        spatial_dims: int,
        widths: Sequence[int],
        hidden: Sequence[int],
        *,
        kernel_size: int = 3,
        padding: int | None = None,
        pool_size: int = 1,
        batch_norm: bool = False,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        activation_layer(activation)
        t = layer_types(spatial_dims)
        pad = kernel_size // 2 if padding is None else padding
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        ch = in_channels
        for i, width in enumerate(widths, start=1):
            unit: list[nn.Module] = [t["conv"](ch, width, kernel_size, padding=pad)]
            if batch_norm:
                unit.append(t["bn"](width))
            unit.append(activation_layer(activation))
            layers[f"block{i}"] = nn.Sequential(*unit)
            layers[f"pool{i}"] = t["maxpool"](2)
            ch = width
        self.features = nn.Sequential(layers)
        self.pool = t["avgpool"](pool_size)
        head: list[nn.Module] = [nn.Flatten()]
        n_in = ch * pool_size**spatial_dims
        for n_out in hidden:
            head += [nn.Linear(n_in, n_out), activation_layer(activation)]
            if dropout:
                head.append(nn.Dropout(dropout))
            n_in = n_out
        head.append(nn.Linear(n_in, num_classes))
        self.head = nn.Sequential(*head)
        self.cam_layer = f"features.block{len(widths)}"

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


@register_model("cancernet", input_size=50, family="cnn", channels_last=True)
def cancernet(
    *,
    num_classes: int,
    in_channels: int = 3,
    spatial_dims: int = 2,
    widths: Sequence[int] = (32, 64, 128),
    depths: Sequence[int] = (1, 2, 3),
    dense: int = 256,
    activation: str = "relu",
) -> CancerNet:
    """CancerNet for 50-px IDC histopathology patches (SeparableConv 32-64-64-128-128-128)."""
    return CancerNet(num_classes, in_channels, spatial_dims, widths, depths, dense, activation=activation)


@register_model("test_cancernet", input_size=50, family="cnn", channels_last=True)
def tiny_cancernet(*, num_classes: int, in_channels: int = 3, spatial_dims: int = 2,
                   activation: str = "relu") -> CancerNet:
    """Tiny CancerNet (4-8-8 channels, dense 16) for fast tests."""
    return CancerNet(num_classes, in_channels, spatial_dims, (4, 8), (1, 2), dense=16, pool_size=2,
                     activation=activation)


@register_model("melanoma_cnn", input_size=224, family="cnn")
def melanoma_cnn(
    *, num_classes: int, in_channels: int = 3, spatial_dims: int = 2, dropout: float = 0.5,
    activation: str = "relu",
) -> PlainCNN:
    """The melanoma project's 224-px CNN: Conv32-Pool-Conv64-Pool-Conv128-Pool-Dense128-Dropout.

    The original flattened a 28×28×128 map (12.8 M dense weights); here an adaptive
    average pool to 4×4 feeds the Dense(128), so any input size works.
    """
    return PlainCNN(
        num_classes, in_channels, spatial_dims, (32, 64, 128), (128,), pool_size=4, dropout=dropout,
        activation=activation,
    )


@register_model("lenet", input_size=32, family="cnn")
def lenet(*, num_classes: int, in_channels: int = 1, spatial_dims: int = 2, activation: str = "relu") -> PlainCNN:
    """LeNet-5 style: Conv6(5×5)-Pool-Conv16(5×5)-Pool-FC120-FC84, ReLU and max pooling.

    Input at least 16 px; the adaptive pool to 5×5 reproduces the classic 32-px head.
    """
    return PlainCNN(
        num_classes, in_channels, spatial_dims, (6, 16), (120, 84), kernel_size=5, padding=0,
        pool_size=5, activation=activation,
    )  # fmt: skip


@register_model("test_cnn", input_size=32, family="cnn")
def tiny_cnn(*, num_classes: int, in_channels: int = 3, spatial_dims: int = 2, activation: str = "relu") -> PlainCNN:
    """Two conv blocks (8, 16 channels) + global pooling: ~1.5 k parameters, for tests."""
    return PlainCNN(num_classes, in_channels, spatial_dims, (8, 16), (), batch_norm=True, activation=activation)
