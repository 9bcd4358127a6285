"""ImageNet-class backbones without torchvision: MONAI's ResNet, DenseNet-121 and
EfficientNet-B0/B1, plus a compact MobileNetV3 (MONAI has none).

Weights are never downloaded here (MONAI's own ``pretrained=True`` would); load a local
file with ``create_model(..., pretrained="weights.pth")``. For small images
(``input_size <= 64``, e.g. 28-px MedMNIST) every backbone switches to a small stem
(ResNet/DenseNet: 3×3 stride-1 conv, no max pool; EfficientNet/MobileNetV3: stride-1
first conv) so the last feature map, the CAM target, keeps some spatial extent, as in
the MedMNIST benchmarks' CIFAR-style ResNets. It costs compute: ResNet-18 at 28 px does
~13× the FLOPs of the ImageNet stem (0.91 vs 0.07 GFLOP forward); ``small_stem=False``
keeps the ImageNet stem.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medlens.models.cnn import layer_types
from medlens.models.registry import register_model

SMALL_INPUT = 64  # input_size at or below which the small stem is used


def _small(input_size: int | None, small_stem: bool | None) -> bool:
    """Explicit ``small_stem`` wins; else small when ``input_size <= 64``."""
    if small_stem is not None:
        return bool(small_stem)
    return input_size is not None and input_size <= SMALL_INPUT


# ----------------------------------------------------------------- MONAI ResNet
def _resnet(
    block: str,
    layers: Sequence[int],
    widths: Sequence[int],
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    input_size: int | None,
    small_stem: bool | None = None,
) -> nn.Module:
    from monai.networks.nets import ResNet

    small = _small(input_size, small_stem)
    model = ResNet(
        block=block,
        layers=list(layers),
        block_inplanes=list(widths),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=3 if small else 7,
        conv1_t_stride=1 if small else 2,
        no_max_pool=small,
        shortcut_type="B",
        bias_downsample=False,  # torchvision layout: its ResNet weights load by name
        num_classes=num_classes,
    )
    model.cam_layer = "layer4"
    return model


_WIDTHS = (64, 128, 256, 512)
_RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3)),
            "resnet101": ("bottleneck", (3, 4, 23, 3))}  # fmt: skip


def _register_resnet(name: str, block: str, layers: Sequence[int]) -> None:
    @register_model(name, input_size=224, family="resnet", channels_last=True, cam_layer="layer4")
    def factory(
        *,
        num_classes: int,
        in_channels: int = 3,
        spatial_dims: int = 2,
        input_size: int | None = None,
        small_stem: bool | None = None,
    ) -> nn.Module:
        return _resnet(
            block, layers, _WIDTHS, num_classes, in_channels, spatial_dims, input_size, small_stem
        )

    factory.__doc__ = f"MONAI {name} ({block} blocks {layers}); small stem if input_size <= 64."


for _name, (_block, _layers) in _RESNETS.items():
    _register_resnet(_name, _block, _layers)


@register_model("test_resnet", input_size=32, family="resnet", channels_last=True,
                cam_layer="layer4")  # fmt: skip
def tiny_resnet(
    *,
    num_classes: int,
    in_channels: int = 3,
    spatial_dims: int = 2,
    input_size: int | None = None,
    small_stem: bool | None = None,
) -> nn.Module:
    """MONAI ResNet with one basic block per stage and widths 4-8-16-32, for tests."""
    return _resnet(
        "basic",
        (1, 1, 1, 1),
        (4, 8, 16, 32),
        num_classes,
        in_channels,
        spatial_dims,
        input_size,
        small_stem,
    )


# ---------------------------------------------------------- DenseNet / EfficientNet
@register_model("densenet121", input_size=224, family="densenet",
                cam_layer="features.denseblock4")  # fmt: skip
def densenet121(
    *,
    num_classes: int,
    in_channels: int = 3,
    spatial_dims: int = 2,
    input_size: int | None = None,
    small_stem: bool | None = None,
) -> nn.Module:
    """MONAI DenseNet-121; for input_size <= 64 the stem is a 3×3 stride-1 conv, no pool."""
    from monai.networks.nets import DenseNet121

    model = DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
        pretrained=False,
    )  # fmt: skip
    if _small(input_size, small_stem):
        conv = layer_types(spatial_dims)["conv"]
        model.features.conv0 = conv(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.features.pool0 = nn.Identity()
    model.cam_layer = "features.denseblock4"
    return model


def _register_efficientnet(name: str, variant: str, size: int) -> None:
    @register_model(name, input_size=size, family="efficientnet", cam_layer="_conv_head")
    def factory(
        *, num_classes: int, in_channels: int = 3, spatial_dims: int = 2,
        input_size: int | None = None, small_stem: bool | None = None,
    ) -> nn.Module:  # fmt: skip
        from monai.networks.nets import EfficientNetBN

        model = EfficientNetBN(
            variant, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels,
            num_classes=num_classes,
        )  # fmt: skip
        if _small(input_size, small_stem):  # stride-1 stem with symmetric 'same' padding
            model._conv_stem.stride = (1,) * spatial_dims
            pad = nn.ConstantPad2d if spatial_dims == 2 else nn.ConstantPad3d
            model._conv_stem_padding = pad(1, 0.0)
        model.cam_layer = "_conv_head"
        return model

    factory.__doc__ = (
        f"MONAI EfficientNetBN {variant} (never downloads weights); stride-1 stem if "
        "input_size <= 64."
    )


_register_efficientnet("efficientnet_b0", "efficientnet-b0", 224)
_register_efficientnet("efficientnet_b1", "efficientnet-b1", 240)


# ------------------------------------------------------------------ MobileNetV3
# (kernel, expanded, out, squeeze-excite, hard-swish, stride), as in Howard et al. 2019.
_MBV3 = {
    "large": ([(3, 16, 16, 0, 0, 1), (3, 64, 24, 0, 0, 2), (3, 72, 24, 0, 0, 1),
               (5, 72, 40, 1, 0, 2), (5, 120, 40, 1, 0, 1), (5, 120, 40, 1, 0, 1),
               (3, 240, 80, 0, 1, 2), (3, 200, 80, 0, 1, 1), (3, 184, 80, 0, 1, 1),
               (3, 184, 80, 0, 1, 1), (3, 480, 112, 1, 1, 1), (3, 672, 112, 1, 1, 1),
               (5, 672, 160, 1, 1, 2), (5, 960, 160, 1, 1, 1), (5, 960, 160, 1, 1, 1)], 1280),
    "small": ([(3, 16, 16, 1, 0, 2), (3, 72, 24, 0, 0, 2), (3, 88, 24, 0, 0, 1),
               (5, 96, 40, 1, 1, 2), (5, 240, 40, 1, 1, 1), (5, 240, 40, 1, 1, 1),
               (5, 120, 48, 1, 1, 1), (5, 144, 48, 1, 1, 1), (5, 288, 96, 1, 1, 2),
               (5, 576, 96, 1, 1, 1), (5, 576, 96, 1, 1, 1)], 1024),
}  # fmt: skip


def _divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_act(
    dims: int, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:  # fmt: skip
    t = layer_types(dims)
    layers = [t["conv"](cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              t["bn"](cout, eps=0.001, momentum=0.01)]  # fmt: skip
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel gate: global pool → 1×1 conv → ReLU → 1×1 conv → hard-sigmoid."""

    def __init__(self, dims: int, channels: int, squeeze: int) -> None:
        super().__init__()
        t = layer_types(dims)
        self.avgpool = t["avgpool"](1)
        self.fc1, self.fc2 = t["conv"](channels, squeeze, 1), t["conv"](squeeze, channels, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return x * self.scale_activation(s)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1×1 expand → k×k depthwise → (SE) → 1×1 project (+ skip)."""

    def __init__(self, dims: int, cin: int, k: int, exp: int, cout: int, se: int, hs: int,
                 stride: int) -> None:  # fmt: skip
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(_conv_bn_act(dims, cin, exp, 1, act=act))
        layers.append(_conv_bn_act(dims, exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcitation(dims, exp, _divisible(exp // 4)))
        layers.append(_conv_bn_act(dims, exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


class MobileNetV3(nn.Module):
    """MobileNetV3 small/large (torchvision's module names, so its weights load by name)."""

    def __init__(self, size: str, num_classes: int, in_channels: int = 3, spatial_dims: int = 2,
                 small_stem: bool = False, dropout: float = 0.2) -> None:  # fmt: skip
        super().__init__()
        config, last_channel = _MBV3[size]
        layers: list[nn.Module] = [
            _conv_bn_act(spatial_dims, in_channels, 16, 3, 1 if small_stem else 2, act=nn.Hardswish)
        ]
        cin = 16
        for k, exp, cout, se, hs, stride in config:
            layers.append(InvertedResidual(spatial_dims, cin, k, exp, cout, se, hs, stride))
            cin = cout
        layers.append(_conv_bn_act(spatial_dims, cin, 6 * cin, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = layer_types(spatial_dims)["avgpool"](1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * cin, last_channel), nn.Hardswish(), nn.Dropout(dropout),
            nn.Linear(last_channel, num_classes),
        )  # fmt: skip
        self.cam_layer = f"features.{len(layers) - 1}"
        for m in self.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _register_mobilenet(name: str, size: str) -> None:
    @register_model(name, input_size=224, family="mobilenet")
    def factory(
        *, num_classes: int, in_channels: int = 3, spatial_dims: int = 2,
        input_size: int | None = None, small_stem: bool | None = None, dropout: float = 0.2,
    ) -> nn.Module:  # fmt: skip
        small = _small(input_size, small_stem)
        return MobileNetV3(size, num_classes, in_channels, spatial_dims, small, dropout)

    factory.__doc__ = f"MobileNetV3-{size.capitalize()}; stride-1 stem if input_size <= 64."


_register_mobilenet("mobilenetv3_small", "small")
_register_mobilenet("mobilenetv3_large", "large")
