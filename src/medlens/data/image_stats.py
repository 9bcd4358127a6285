"""The audit's per-image measurements kept in a fingerprint's ``image_stats`` for the
dataset-shift report.

Each image gets the audit's measurements (:func:`medlens.audit.stats.pixel_stats`:
per-channel colour mean/SD, brightness, contrast, sharpness) plus its height and width;
a set of images is summarised as mean, SD and percentiles of each. The training side is
stored in the package's fingerprint (:mod:`medlens.data.fingerprint`); the new data's side
is computed the same way in :mod:`medlens.evaluate.shift`. Not part of the OOD check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

#: The audit's per-image measurements kept in ``image_stats`` (names as in
#: :data:`medlens.audit.stats.FEATURES`), plus the image's height and width in pixels.
IMAGE_STATS = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "brightness", "contrast",
               "sharpness", "height", "width")
#: Images are measured at most this large (longer side, area-resized), as the audit does.
IMAGE_STATS_MAX_SIDE = 512
#: Percentiles kept in every summary (fingerprint statistics and ``image_stats`` alike).
QUANTILES = (0.5, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.5)


class HasImageStats(Protocol):
    """What the summaries read of one image (:class:`medlens.data.fingerprint.ImageStats`)."""

    format: str | None
    image: dict[str, float]


def measure_image(arr8: np.ndarray) -> dict[str, float]:
    """The audit's measurements (:data:`IMAGE_STATS` less the size) of an ``(H, W, C)``
    uint8 image, taken on it area-resized to :data:`IMAGE_STATS_MAX_SIDE` as the audit
    does; ``{}`` for channel counts other than 1 and 3."""
    import cv2

    from medlens.audit.stats import pixel_stats

    a = np.ascontiguousarray(arr8)
    if a.ndim != 3 or a.shape[2] not in (1, 3) or min(a.shape[:2]) < 1:
        return {}
    h, w = a.shape[:2]
    if max(h, w) > IMAGE_STATS_MAX_SIDE:
        k = IMAGE_STATS_MAX_SIDE / max(h, w)
        a = cv2.resize(a, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        a = a[..., None] if a.ndim == 2 else a
    stats, _ = pixel_stats(a)
    return {k: float(stats[k]) for k in IMAGE_STATS if k in stats}


def summarise_image_stats(items: Iterable[HasImageStats]) -> dict[str, Any]:
    """Mean, SD and percentiles over the images of each :data:`IMAGE_STATS` measurement
    (the fingerprint's ``image_stats``; also the new data's side in
    :mod:`medlens.evaluate.shift`). Measurements no image has are left out."""
    items = list(items)
    out: dict[str, Any] = {}
    for k in IMAGE_STATS:
        vals = np.array([s.image[k] for s in items if k in s.image and np.isfinite(s.image[k])], dtype=np.float64)
        if vals.size:
            out[k] = {**summarise_values(vals), "n": int(vals.size)}
    return out


def format_shares(items: Iterable[HasImageStats]) -> dict[str, float]:
    """Share of the images in each file format (``jpeg``, ``png``…; ``array`` for in-memory)."""
    counts = Counter(s.format or "array" for s in items)
    total = sum(counts.values())
    return {k: v / total for k, v in counts.most_common()} if total else {}


def summarise_values(v: np.ndarray) -> dict[str, Any]:
    """Mean, SD and :data:`QUANTILES` percentiles of ``v``, rounded for the JSON fingerprint."""
    q = np.percentile(v, QUANTILES)
    return {"mean": round(float(v.mean()), 4), "sd": round(float(v.std()), 4),
            "quantiles": {f"{p:g}": round(float(x), 4) for p, x in zip(QUANTILES, q)}}
