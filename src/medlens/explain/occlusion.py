"""Occlusion sensitivity (Zeiler & Fergus 2014) via captum: how much the score drops
when a sliding patch is replaced by the image mean."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medlens.explain.base import Explainer, Target, register_explainer
from medlens.explain.cam import ScoreModule


@register_explainer("occlusion")
class OcclusionExplainer(Explainer):
    """Score drop under a sliding patch; positive part kept.

    Args:
        window: patch side in pixels (default: 1/8 of the smallest side in 2D, 1/4 in 3D,
            at least 3).
        stride: step between patches (default: half the window).
        batch_size: perturbed images per forward pass.
    """

    def __init__(
        self,
        *,
        window: int | None = None,
        stride: int | None = None,
        batch_size: int = 64,
        **opts: Any,
    ) -> None:
        super().__init__(**opts)
        self.window = window
        self.stride = stride
        self.batch_size = int(batch_size)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: Target, layer: str | None
    ) -> torch.Tensor:
        from captum.attr import Occlusion

        spatial = x.shape[2:]
        win = int(self.window or max(3, min(spatial) // (8 if len(spatial) == 2 else 4)))
        stride = int(self.stride or max(1, win // 2))
        maps = []
        for i in range(x.shape[0]):
            xi = x[i : i + 1].detach()
            score = ScoreModule(model, target.select(i), prob=True)
            with torch.no_grad():
                attr = Occlusion(lambda t, s=score: s(t)[:, 0]).attribute(
                    xi,
                    sliding_window_shapes=(x.shape[1], *[min(win, s) for s in spatial]),
                    strides=(x.shape[1], *[min(stride, s) for s in spatial]),
                    baselines=float(xi.mean()),
                    perturbations_per_eval=self.batch_size,
                )
            maps.append(attr.sum(1).clamp_min(0)[0])
        return torch.stack(maps)
