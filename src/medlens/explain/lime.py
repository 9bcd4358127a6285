"""LIME (Ribeiro et al. 2016) via captum, on SLIC superpixels (2D) or supervoxels (3D).

The sample count is bounded (default 200 perturbed images, evaluated in batches), which
keeps one 224 px image under ~10 s on two CPU cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.explain.base import Explainer, Target, register_explainer
from medlens.explain.cam import ScoreModule


def superpixels(
    image: torch.Tensor, n_segments: int = 50, compactness: float = 10.0
) -> torch.Tensor:
    """SLIC segments of one image ``(C, *spatial)`` → long tensor ``(*spatial)`` from 0."""
    from skimage.segmentation import slic

    arr = image.detach().float().cpu().numpy()
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if arr.shape[0] == 1:
        seg = slic(
            arr[0],
            n_segments=n_segments,
            compactness=compactness / 10.0,
            channel_axis=None,
            start_label=0,
        )
    else:
        seg = slic(
            np.moveaxis(arr, 0, -1),
            n_segments=n_segments,
            compactness=compactness,
            channel_axis=-1,
            start_label=0,
        )
    _, seg = np.unique(seg, return_inverse=True)  # consecutive ids, as captum needs
    return torch.from_numpy(seg.reshape(arr.shape[1:]).astype(np.int64))


@register_explainer("lime")
class LimeExplainer(Explainer):
    """Superpixel LIME: a ridge model fit on random superpixel on/off samples.

    Args:
        n_segments: approximate number of superpixels (SLIC).
        n_samples: perturbed images per explanation (the cost bound).
        batch_size: perturbed images per forward pass.
        compactness: SLIC shape regularity (higher = squarer segments).
        seed: random seed for the samples (reproducible maps).
    """

    def __init__(
        self,
        *,
        n_segments: int = 50,
        n_samples: int = 200,
        batch_size: int = 50,
        compactness: float = 10.0,
        seed: int = 0,
        **opts: Any,
    ) -> None:
        super().__init__(**opts)
        if int(n_samples) < 2:
            raise ValueError(f"n_samples must be at least 2, got {n_samples}")
        self.n_segments = int(n_segments)
        self.n_samples = int(n_samples)
        self.batch_size = int(batch_size)
        self.compactness = float(compactness)
        self.seed = int(seed)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: Target, layer: str | None
    ) -> torch.Tensor:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import Lime

        maps = []
        for i in range(x.shape[0]):
            xi = x[i : i + 1].detach()
            seg = superpixels(xi[0], self.n_segments, self.compactness)
            score = ScoreModule(model, target.select(i), prob=True)
            lime = Lime(lambda t, s=score: s(t)[:, 0], interpretable_model=SkLearnRidge(alpha=1.0))
            state = torch.random.get_rng_state()
            torch.manual_seed(self.seed + i)
            try:
                with torch.no_grad():
                    attr = lime.attribute(
                        xi,
                        baselines=float(xi.mean()),
                        feature_mask=seg[None, None],
                        n_samples=self.n_samples,
                        perturbations_per_eval=self.batch_size,
                    )
            finally:
                torch.random.set_rng_state(state)
            maps.append(attr[0, 0].clamp_min(0))
        return torch.stack(maps)
