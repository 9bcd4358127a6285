"""Grad-CAM and Grad-CAM++ on MONAI's ``monai.visualize`` (2D and 3D alike).

MONAI computes the maps; medlens supplies the target (via a score module whose single
output is the target score, so per-image classes and segmentation regions work in one
batch) and removes MONAI's hooks afterwards (MONAI keeps no handles to them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medlens.errors import ConfigError
from medlens.explain.base import Explainer, Target, register_explainer


class ScoreModule(nn.Module):
    """Wraps ``model`` so its output is ``(B, 1)``: the target score of each image."""

    def __init__(self, model: nn.Module, target: Target, *, prob: bool = False) -> None:
        super().__init__()
        self.model = model
        self.target = target
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(self.model(x), prob=self.prob).unsqueeze(1)


def _minmax_identity(x: torch.Tensor) -> torch.Tensor:
    return x  # medlens normalises later (MONAI's default flips the range)


class _CAMExplainer(Explainer):
    needs_layer = True
    _monai_cls = "GradCAM"

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: Target, layer: str | None
    ) -> torch.Tensor:
        import monai.visualize as mv
        from monai.visualize.class_activation_maps import ModelWithHooks
        from monai.visualize.visualizer import default_upsampler

        n_spatial = x.ndim - 2

        class _Hooks(ModelWithHooks):
            def class_score(self, logits: torch.Tensor, class_idx: int) -> torch.Tensor:
                # One score per image, shaped to broadcast over (B, C, *spatial). The
                # value is zeroed (gradient kept) so Grad-CAM++'s exp(score) factor —
                # a per-image constant removed by normalisation — cannot overflow.
                s = logits[:, 0]
                s = s - s.detach()
                return s.view(-1, 1, *[1] * n_spatial)

        wrapped = ScoreModule(model, target)
        hooked = _Hooks(wrapped, f"model.{layer}", register_forward=True, register_backward=True)
        cam = getattr(mv, self._monai_cls)(
            nn_module=hooked, target_layers=f"model.{layer}", postprocessing=_minmax_identity
        )
        xi = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            try:
                raw = cam.compute_map(xi, class_idx=0)
            except KeyError as err:  # the layer's hooks never fired
                raise ConfigError(
                    f"Layer {layer!r} is not used in the model's forward pass; choose another "
                    "with --layer."
                ) from err
        if raw.ndim != x.ndim:
            raise ConfigError(
                f"Layer {layer!r} outputs shape {tuple(hooked.activations[f'model.{layer}'].shape)}, "
                "not a spatial feature map; choose a convolutional layer with --layer."
            )
        maps = default_upsampler(x.shape[2:])(raw.detach())
        return maps[:, 0].detach()


@register_explainer("gradcam")
class GradCAMExplainer(_CAMExplainer):
    """Grad-CAM (Selvaraju et al. 2017): activations weighted by mean gradients."""

    _monai_cls = "GradCAM"


@register_explainer("gradcam++")
class GradCAMppExplainer(_CAMExplainer):
    """Grad-CAM++ (Chattopadhyay et al. 2018): better for several instances of a class."""

    _monai_cls = "GradCAMpp"
