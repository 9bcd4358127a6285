"""Choosing the layer a CAM is computed on.

Every registered model names its default in ``model.cam_layer``; a user may override it
with a dotted module name (``"features.3"``, ``"layer4.1.conv2"``). A wrong name is
answered with "did you mean" and the list of convolutional layers.
"""

from __future__ import annotations

import difflib

from torch import nn

from medlens.errors import ConfigError

#: Methods that need no convolutional layer; named when a CAM is impossible.
LAYER_FREE_METHODS = ("lime", "occlusion", "integrated-gradients")

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def conv_layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every convolution in ``model``, in definition order."""
    return [name for name, mod in model.named_modules() if isinstance(mod, _CONV_TYPES)]


def first_conv(model: nn.Module) -> nn.Module | None:
    """The first convolution (its ``in_channels`` is what the model expects)."""
    for mod in model.modules():
        if isinstance(mod, _CONV_TYPES):
            return mod
    return None


def resolve_layer(model: nn.Module, layer: str | None = None, *, method: str = "gradcam") -> str:
    """Return the dotted name of the CAM layer: ``layer``, else ``model.cam_layer``.

    Without either, the last convolution is used (the usual Grad-CAM choice).

    Raises:
        ConfigError: the model has no convolution (naming the methods that do work), or
            ``layer`` is not a module of the model (did-you-mean + conv layer list).
    """
    convs = conv_layer_names(model)
    if not convs:
        raise ConfigError(
            f"Method {method!r} needs a convolutional layer, but {type(model).__name__} has "
            f"none. Use one of the methods that work on any model: "
            f"{', '.join(LAYER_FREE_METHODS)}."
        )
    name = layer if layer is not None else getattr(model, "cam_layer", None)
    if name is None:
        return convs[-1]
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = convs if len(convs) <= 30 else convs[:10] + ["…"] + convs[-15:]
        source = "--layer" if layer is not None else f"{type(model).__name__}.cam_layer"
        raise ConfigError(
            f"Layer {name!r} ({source}) is not in the model.{hint} "
            f"Convolutional layers: {', '.join(shown)}."
        )
    return name
