"""One interface for every explanation method.

An :class:`Explainer` turns ``(model, x, target)`` into one non-negative map per image.
Targets are objects that reduce the model output to one score per image, so the same
explainer serves classifiers (:class:`ClassTarget`: a class logit) and segmenters
(:class:`RegionTarget`: the class logits inside a predicted region). Hooks and any
temporary change to the model live inside :func:`hooks_released`, which restores the
model however the method ends and never swallows an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from medlens.errors import BadInputError, ConfigError
from medlens.explain.layers import first_conv
from medlens.registry import Registry

logger = logging.getLogger(__name__)

EXPLAINERS: Registry[type[Explainer]] = Registry("explanation method")


# --------------------------------------------------------------------------- targets
@dataclass
class ClassTarget:
    """Score = the logit (or probability) of ``classes[b]`` for image ``b``."""

    classes: torch.Tensor  # (B,) long

    def __call__(self, output: torch.Tensor, *, prob: bool = False) -> torch.Tensor:
        if prob:
            output = torch.sigmoid(output) if output.shape[1] == 1 else output.softmax(1)
        idx = self.classes.to(output.device).view(-1, 1)
        if idx.shape[0] != output.shape[0]:  # a perturbation batch of one image
            idx = idx.expand(output.shape[0], 1) if idx.shape[0] == 1 else idx
        return output.gather(1, idx).squeeze(1)

    def select(self, index: int) -> ClassTarget:
        return ClassTarget(self.classes[index : index + 1])


@dataclass
class RegionTarget:
    """Segmenter target: mean ``classes[b]`` logit over the fixed region ``masks[b]``.

    The region is taken from the prediction on the unperturbed input (the
    "SemanticSegmentationTarget" of pytorch-grad-cam), so perturbations change the score
    but not the pixels it is measured on.
    """

    classes: torch.Tensor  # (B,) long
    masks: torch.Tensor  # (B, *spatial) bool

    def __call__(self, output: torch.Tensor, *, prob: bool = False) -> torch.Tensor:
        if prob:
            output = torch.sigmoid(output) if output.shape[1] == 1 else output.softmax(1)
        b = output.shape[0]
        classes, masks = self.classes.to(output.device), self.masks.to(output.device)
        if classes.shape[0] != b and classes.shape[0] == 1:
            classes = classes.expand(b)
            masks = masks.expand(b, *masks.shape[1:])
        idx = classes.view(b, 1, *[1] * (output.ndim - 2)).expand(b, 1, *output.shape[2:])
        chosen = output.gather(1, idx).squeeze(1)
        m = masks.to(chosen.dtype)
        return (chosen * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)

    def select(self, index: int) -> RegionTarget:
        return RegionTarget(self.classes[index : index + 1], self.masks[index : index + 1])


Target = ClassTarget | RegionTarget


class PredictedTarget:
    """Resolved from the first (clean) output it sees: saves CAMs a second forward pass.

    Only for methods whose first model call is on the unperturbed input (the CAMs).
    """

    def __init__(self, target: int | None) -> None:
        self.target = target
        self.resolved: Target | None = None

    def __call__(self, output: torch.Tensor, *, prob: bool = False) -> torch.Tensor:
        if self.resolved is None:
            self.resolved = make_target(output.detach(), self.target)
        return self.resolved(output, prob=prob)


# --------------------------------------------------------------------------- model state
@contextmanager
def hooks_released(model: nn.Module) -> Iterator[nn.Module]:
    """Run a method with temporary hooks; restore the model exactly on any exit.

    Inside: eval mode, in-place activations switched off (full backward hooks fail on
    them) and parameters frozen (gradients are only needed w.r.t. the input). On exit
    every hook added inside is removed and these settings are restored. Exceptions
    propagate unchanged.
    """
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    before = {id(m): {k: set(getattr(m, k, {}).keys()) for k in kinds} for m in model.modules()}
    inplace = {
        m: m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)
    }
    grads = {p: p.requires_grad for p in model.parameters()}
    training = model.training
    try:
        model.eval()
        for m in inplace:
            m.inplace = False
        for p in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for m in model.modules():
            old = before.get(id(m), {})
            for k in kinds:
                hooks = getattr(m, k, None)
                if hooks is None:
                    continue
                for key in [key for key in hooks if key not in old.get(k, set())]:
                    del hooks[key]
        for m, value in inplace.items():
            m.inplace = value
        for p, value in grads.items():
            p.requires_grad_(value)
        model.train(training)


# --------------------------------------------------------------------------- checks
def as_model_and_input(model: Any, x: Any) -> tuple[nn.Module, torch.Tensor]:
    """Accept ``(nn.Module, tensor)`` or ``(package, paths | HWC arrays | tensor)``.

    A package (``medlens.load_model``) reads paths with its loader and preprocesses
    images the way the model was trained.
    """
    import os

    if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None), nn.Module):
        pkg, model = model, model.model
        if isinstance(x, (str, os.PathLike)):
            x = [x]
        if isinstance(x, (list, tuple)):
            if all(isinstance(i, (str, os.PathLike)) for i in x):
                x = pkg.load_images([str(i) for i in x])
            x = pkg.preprocess(list(x))
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch nn.Module or a model package, got {type(model).__name__}"
        )
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x)).float()
    return model, x


def check_input(model: nn.Module, x: torch.Tensor) -> None:
    """Raise a clear error for an input the model cannot take."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"x must be a torch.Tensor (B, C, H, W) or (B, C, D, H, W), got {type(x).__name__}"
        )
    if x.ndim not in (4, 5):
        raise BadInputError(
            f"Expected a batch (B, C, H, W) or (B, C, D, H, W), got a tensor of shape {tuple(x.shape)}."
        )
    conv = first_conv(model)
    expected = getattr(model, "in_channels", None) or (
        conv.in_channels if conv is not None else None
    )
    if isinstance(expected, int) and x.shape[1] != expected:
        raise BadInputError(
            f"The model expects images with {expected} channel(s), got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}). Convert the images (grey ↔ RGB) before explaining."
        )


@torch.no_grad()
def forward(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Model output in eval mode, in chunks (restores the training flag)."""
    training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(training)


def is_segmenter(output: torch.Tensor) -> bool:
    """Classifiers give (B, K); segmenters give (B, K, *spatial)."""
    return output.ndim > 2


def make_target(output: torch.Tensor, target: int | None = None) -> Target:
    """Build the target for each image from the clean output.

    Classifier: ``target`` or the predicted class. Segmenter: the predicted region of
    class ``target`` (default: the most frequent predicted foreground class).

    Raises:
        ConfigError: ``target`` outside ``0 .. K-1``.
    """
    k = output.shape[1]
    n_classes = 2 if k == 1 else k
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
            raise ConfigError(f"target must be a class index (int), got {target!r}.")
        if not 0 <= int(target) < n_classes:
            raise ConfigError(
                f"target class {target} is out of range: the model has {n_classes} classes "
                f"(valid: 0 … {n_classes - 1})."
            )
    b = output.shape[0]
    if not is_segmenter(output):
        if k == 1:  # single-logit binary classifier: explain the logit itself
            if target == 0:
                raise ConfigError(
                    "A single-logit model explains class 1 only; use --target 1 or none."
                )
            return ClassTarget(torch.zeros(b, dtype=torch.long))
        cls = (
            output.argmax(1) if target is None else torch.full((b,), int(target), dtype=torch.long)
        )
        return ClassTarget(cls)
    if k == 1:
        pred = (output[:, 0] > 0).long()
    else:
        pred = output.argmax(1)
    classes = []
    masks = []
    for i in range(b):
        c = int(target) if target is not None else _main_foreground(pred[i], k)
        m = pred[i] == c
        if not bool(m.any()):
            logger.warning(
                "image %d: no pixel predicted as class %d; explaining the whole image", i, c
            )
            m = torch.ones_like(m)
        classes.append(0 if k == 1 else c)
        masks.append(m)
    return RegionTarget(torch.tensor(classes, dtype=torch.long), torch.stack(masks))


def _main_foreground(pred: torch.Tensor, k: int) -> int:
    counts = torch.bincount(pred.flatten(), minlength=max(k, 2))
    if counts[1:].sum() == 0:
        return 1
    return int(counts[1:].argmax()) + 1


# --------------------------------------------------------------------------- explainers
class Explainer:
    """Base class: subclasses implement :meth:`attribute` on the raw model and target.

    Options are constructor keywords so ``explain(..., n_samples=200)`` reaches them.
    """

    name: ClassVar[str] = ""
    needs_layer: ClassVar[bool] = False

    def __init__(self, **opts: Any) -> None:
        if opts:
            raise ConfigError(f"Unknown option(s) for {self.name!r}: {', '.join(sorted(opts))}.")

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: Target, layer: str | None
    ) -> torch.Tensor:
        """Return non-negative maps ``(B, *spatial)`` at input resolution."""
        raise NotImplementedError


def register_explainer(name: str):
    """Register an :class:`Explainer` subclass under ``name``."""

    def deco(cls: type[Explainer]) -> type[Explainer]:
        cls.name = name
        return EXPLAINERS.register(name)(cls)

    return deco


def normalize_maps(maps: torch.Tensor) -> np.ndarray:
    """Scale each map to [0, 1] (a constant map becomes all zeros)."""
    m = torch.nan_to_num(maps.detach().float().cpu(), nan=0.0)
    flat = m.flatten(1)
    lo = flat.min(1).values.view(-1, *[1] * (m.ndim - 1))
    hi = flat.max(1).values.view(-1, *[1] * (m.ndim - 1))
    span = hi - lo
    out = torch.where(span > 0, (m - lo) / span.clamp_min(1e-12), torch.zeros_like(m))
    return out.numpy().astype(np.float32)
