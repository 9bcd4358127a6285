"""The built-in explanation methods and the entry point, :func:`explain`.

:mod:`medlens.explain.base` holds the interface (targets, :class:`Explainer`, the
registry); each method module registers itself there, and this module imports them, so
the dependency runs one way: methods → base, this module → methods and base.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.explain.base import (
    EXPLAINERS,
    ClassTarget,
    PredictedTarget,
    RegionTarget,
    Target,
    as_model_and_input,
    check_input,
    forward,
    hooks_released,
    make_target,
    normalize_maps,
)
from medlens.explain.layers import first_conv, resolve_layer


def load_builtin_explainers() -> None:
    """Import the modules that register the built-in methods (idempotent)."""
    import medlens.explain.cam
    import medlens.explain.ig
    import medlens.explain.lime
    import medlens.explain.occlusion  # noqa: F401


def list_methods() -> list[str]:
    """The registered explanation methods, built-ins included, by name."""
    load_builtin_explainers()
    return EXPLAINERS.names()


def _match_memory_format(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Give a channels_last model a channels_last input (1.5–2× faster ResNets on CPU)."""
    conv = first_conv(model)
    if conv is None or x.ndim != 4 or conv.weight.ndim != 4:
        return x
    w = conv.weight
    if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _one_pass(model: nn.Module, layer: str | None) -> tuple[nn.Module, str | None]:
    """A CAM reads one forward pass through its layer; a test-time-mirroring model
    (:class:`~medlens.models.ensemble.MirrorMean`) runs its network twice, the second time on the
    mirror image, so its CAM is that of the network on the image as given."""
    from medlens.models.ensemble import MirrorMean

    if not isinstance(model, MirrorMean):
        return model, layer
    return model.inner, (layer.removeprefix("inner.") if layer else layer)


def explain(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    target: int | Target | None = None,
    layer: str | None = None,
    **opts: Any,
) -> np.ndarray:
    """Explain a batch: one heat map per image, scaled to [0, 1] at input resolution.

    Args:
        model: classifier (logits ``(B, K)``) or segmenter (``(B, K, *spatial)``), or a
            model package (then ``x`` may also be image paths or HWC arrays).
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` preprocessed input.
        method: ``gradcam``, ``gradcam++``, ``lime``, ``occlusion``,
            ``integrated-gradients`` (see :func:`list_methods`).
        target: class index; ``None`` explains the predicted class (segmenters: the
            predicted region of that class). A ready :class:`ClassTarget` /
            :class:`RegionTarget` is used as given.
        layer: dotted module name for CAM methods (default ``model.cam_layer``).
        **opts: method options (e.g. ``n_samples`` for LIME).

    Returns:
        ``(B, H, W)`` or ``(B, D, H, W)`` float32 maps in [0, 1].
    """
    load_builtin_explainers()
    cls = EXPLAINERS.get(method)
    model, x = as_model_and_input(model, x)
    check_input(model, x)
    if cls.needs_layer:
        model, layer = _one_pass(model, layer)
    explainer = cls(**opts)
    name = resolve_layer(model, layer, method=cls.name) if cls.needs_layer else None
    x = _match_memory_format(model, x)
    tgt: Target | PredictedTarget
    if isinstance(target, (ClassTarget, RegionTarget)):
        tgt = target
    elif cls.needs_layer:
        tgt = PredictedTarget(target)
    else:
        tgt = make_target(forward(model, x), target)
    with hooks_released(model):
        maps = explainer.attribute(model, x, tgt, name)
    return normalize_maps(maps)
