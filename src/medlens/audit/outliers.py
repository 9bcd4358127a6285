"""Outliers by robust z-score (median and MAD) on size, brightness and sharpness.

Robust statistics because the things we look for (a blank slide, a photo of the wrong
size) would inflate an ordinary standard deviation and hide themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.audit.stats import FEATURES

OUTLIER_FEATURES = ("width", "height", "file_kb", "brightness", "contrast", "sharpness")


def robust_z(values: np.ndarray) -> np.ndarray:
    """``0.6745 · (x − median) / MAD``; 0 where the MAD is zero and x equals the median."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    z = np.zeros_like(v)
    if ok.sum() < 3:
        return z
    med = np.median(v[ok])
    mad = np.median(np.abs(v[ok] - med))
    if mad == 0:
        # most values identical: anything different is infinitely unusual; scale by mean abs dev
        mad = np.mean(np.abs(v[ok] - med)) or 1.0
    z[ok] = 0.6745 * (v[ok] - med) / mad
    return z


def find_outliers(
    table: np.ndarray, paths: list[str], labels: list[int | None], *, z_threshold: float = 5.0,
    max_items: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Images far from the rest on any outlier feature, the most extreme first.

    Returns:
        (outliers, total) — at most ``max_items`` entries ``{"path", "label", "reasons",
        "score"}``, and how many images were outliers in all.
    """
    if z_threshold <= 0:
        raise ValueError(f"outlier z threshold must be positive, got {z_threshold}")
    zs = {f: robust_z(table[:, FEATURES.index(f)]) for f in OUTLIER_FEATURES}
    score = np.max(np.abs(np.stack(list(zs.values()), axis=1)), axis=1) if len(table) else np.zeros(0)
    flagged = np.flatnonzero(score >= z_threshold)
    flagged = flagged[np.argsort(-score[flagged], kind="stable")]
    out = []
    for i in flagged[:max_items]:
        reasons = []
        for f, z in zs.items():
            if abs(z[i]) >= z_threshold:
                val = table[i, FEATURES.index(f)]
                reasons.append(f"{f} {val:.4g} ({'high' if z[i] > 0 else 'low'}, z={z[i]:+.1f})")
        out.append({"path": paths[i], "label": labels[i], "reasons": reasons, "score": float(score[i])})
    return out, len(flagged)
