"""Integrated Gradients (Sundararajan et al. 2017) via captum."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medlens.explain.base import Explainer, Target, register_explainer
from medlens.explain.cam import ScoreModule


@register_explainer("integrated-gradients")
class IntegratedGradientsExplainer(Explainer):
    """|attribution| summed over channels, from a black (zero) or mean baseline.

    Args:
        n_steps: points on the path from the baseline to the image.
        baseline: ``"zero"`` or ``"mean"`` (each image's mean value).
        internal_batch_size: images per forward/backward pass.
    """

    def __init__(
        self,
        *,
        n_steps: int = 32,
        baseline: str = "zero",
        internal_batch_size: int = 32,
        **opts: Any,
    ) -> None:
        from medlens.options import look_up_option

        super().__init__(**opts)
        self.n_steps = int(n_steps)
        self.baseline = look_up_option(baseline, ("zero", "mean"), what="baseline")
        self.internal_batch_size = int(internal_batch_size)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: Target, layer: str | None
    ) -> torch.Tensor:
        from captum.attr import IntegratedGradients

        maps = []
        for i in range(x.shape[0]):
            xi = x[i : i + 1].detach()
            score = ScoreModule(model, target.select(i))
            base = (
                torch.zeros_like(xi)
                if self.baseline == "zero"
                else torch.full_like(xi, float(xi.mean()))
            )
            with torch.enable_grad():
                attr = IntegratedGradients(lambda t, s=score: s(t)[:, 0]).attribute(
                    xi,
                    baselines=base,
                    n_steps=self.n_steps,
                    internal_batch_size=self.internal_batch_size,
                )
            maps.append(attr.sum(1).abs()[0])
        return torch.stack(maps)
