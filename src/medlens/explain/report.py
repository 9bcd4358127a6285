"""A section for the training report: CAM galleries of true/false positives/negatives
and the faithfulness table (the lead's report appends it via ``extra_sections``)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

import numpy as np
import torch
from torch import nn

from medlens.explain.base import as_model_and_input, check_input, forward
from medlens.explain.faithfulness import evaluate_faithfulness
from medlens.explain.methods import explain
from medlens.explain.overlay import Norm, blend, png_bytes, to_display

#: LIME is left out of the report's table by default: it costs seconds per image.
REPORT_METHODS = ("gradcam", "gradcam++", "occlusion", "integrated-gradients")


def _img_tag(rgb: np.ndarray, caption: str) -> str:
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    return (
        f'<figure style="display:inline-block;margin:4px"><img src="data:image/png;base64,{data}" '
        f'width="160"/><figcaption style="font-size:small">{escape(caption)}</figcaption></figure>'
    )


def _gallery_image(image: torch.Tensor, heat: np.ndarray, norm: Norm | None) -> np.ndarray:
    if heat.ndim == 3:  # 3D: the slice through the peak along the first axis
        z = int(np.unravel_index(int(heat.argmax()), heat.shape)[0])
        return blend(to_display(image[:, z], norm), heat[z])
    return blend(to_display(image, norm), heat)


def report_section(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | np.ndarray,
    preds: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    *,
    classes: Sequence[str] | None = None,
    positive: int = 1,
    method: str = "gradcam",
    layer: str | None = None,
    per_group: int = 4,
    faithfulness_images: int = 8,
    methods: Sequence[str] = REPORT_METHODS,
    seed: int = 0,
    norm: Norm | None = None,
) -> tuple[str, str]:
    """Return ``(title, html)``.

    Args:
        images: ``(N, C, *spatial)`` preprocessed images (e.g. a test set sample).
        labels, preds: true and predicted classes (``preds=None`` predicts here).
        positive: the class counted as "positive" for TP/FP/TN/FN (multi-class: that
            class against the rest).
        per_group: images shown per group.
        faithfulness_images: images (chosen with ``seed``) used for the table.
        norm: ``(mean, std)`` the images were normalised with; undone for the pictures
            so they show true colours (without it each image is stretched).
    """
    model, images = as_model_and_input(model, images)
    check_input(model, images)
    y = np.asarray(torch.as_tensor(labels)).astype(int)
    p = (
        forward(model, images).argmax(1).numpy()
        if preds is None
        else np.asarray(torch.as_tensor(preds)).astype(int)
    )
    name = (lambda c: classes[c]) if classes else (lambda c: str(c))
    groups = {
        "True positives": (y == positive) & (p == positive),
        "False positives": (y != positive) & (p == positive),
        "True negatives": (y != positive) & (p != positive),
        "False negatives": (y == positive) & (p != positive),
    }
    intro = (
        f"<p>Heat maps: {escape(method)} for the predicted class; positive class = "
        f"{escape(name(positive))}.</p>"
    )
    parts = [intro]
    for title, sel in groups.items():
        idx = np.flatnonzero(sel)[:per_group]
        parts.append(f"<h4>{title} ({int(sel.sum())})</h4>")
        if len(idx) == 0:
            parts.append("<p><i>none</i></p>")
            continue
        x = images[torch.as_tensor(idx)]
        maps = explain(model, x, method=method, layer=layer)
        parts.append(
            "<div>"
            + "".join(
                _img_tag(
                    _gallery_image(x[j], maps[j], norm),
                    f"#{i}: true {name(y[i])}, predicted {name(p[i])}",
                )
                for j, i in enumerate(idx)
            )
            + "</div>"
        )
    rng = np.random.default_rng(seed)
    n = min(faithfulness_images, images.shape[0])
    pick = np.sort(rng.choice(images.shape[0], size=n, replace=False))
    table = evaluate_faithfulness(
        model, images[torch.as_tensor(pick)], methods, layer=layer, seed=seed
    )
    parts.append(f"<h4>Faithfulness on {n} images (deletion/insertion curves)</h4>")
    parts.append(table.to_html())
    return "Explanations", "\n".join(parts)
