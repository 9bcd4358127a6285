"""Per-image measurements and per-class summaries (size, colour, sharpness).

Per image we keep a handful of floats (the "feature table", O(N) floats, no pixels);
per class, fixed-size 256-bin colour histograms. Sharpness is the variance of the
Laplacian of the grey image (OpenCV), the usual focus measure; the blood-cell project's
sum of absolute Laplacian is also kept, per pixel, as ``lap_abs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Columns of the feature table, in order. Pixel columns are NaN for volumes/unreadable.
FEATURES = (
    "width", "height", "aspect", "megapixels", "file_kb", "bits_per_pixel_file",
    "bytes_per_pixel", "channels", "format_code", "jpeg_quant",
    "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b",
    "brightness", "contrast", "sharpness", "lap_abs",
)  # fmt: skip
#: Feature groups used by the shortcut test.
FEATURE_GROUPS = {
    "size_and_file": (
        "width", "height", "aspect", "megapixels", "file_kb", "bits_per_pixel_file",
        "bytes_per_pixel", "channels", "format_code", "jpeg_quant",
    ),
    "colour": ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "brightness", "contrast"),
    "sharpness": ("sharpness", "lap_abs"),
}  # fmt: skip
FORMAT_CODES = {"PNG": 1, "JPEG": 2, "TIFF": 3, "BMP": 4, "DICOM": 5, "NPZ": 6, "GIF": 7, "WEBP": 8}


def pixel_stats(arr8: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Colour moments, brightness, contrast and sharpness of an ``(H, W, C)`` uint8 image.

    Returns:
        (stats, grey) where ``grey`` is the ``(H, W)`` uint8 grey image.
    """
    import cv2

    c = arr8.shape[2]
    if c == 3:
        grey = cv2.cvtColor(arr8, cv2.COLOR_RGB2GRAY)
        means, stds = cv2.meanStdDev(arr8)
        means, stds = means.ravel(), stds.ravel()
    else:
        grey = np.ascontiguousarray(arr8[..., 0])
        m, s = cv2.meanStdDev(grey)
        means, stds = np.repeat(m.ravel(), 3), np.repeat(s.ravel(), 3)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    _, ls = cv2.meanStdDev(lap)
    gm, gs = cv2.meanStdDev(grey)
    stats = {
        "mean_r": float(means[0]), "mean_g": float(means[1]), "mean_b": float(means[2]),
        "std_r": float(stds[0]), "std_g": float(stds[1]), "std_b": float(stds[2]),
        "brightness": float(gm[0, 0]), "contrast": float(gs[0, 0]),
        "sharpness": float(ls[0, 0]) ** 2, "lap_abs": float(cv2.norm(lap, cv2.NORM_L1)) / grey.size,
    }  # fmt: skip
    return stats, grey


class ClassHistograms:
    """Running 256-bin histograms per class and channel (R, G, B and grey): O(classes)."""

    def __init__(self, n_classes: int) -> None:
        self.hist = np.zeros((max(n_classes, 1) + 1, 4, 256), dtype=np.float64)

    def add(self, label: int | None, arr8: np.ndarray, grey: np.ndarray) -> None:
        import cv2

        row = self.hist[-1 if label is None else label]
        if arr8.shape[2] == 3:
            for ch in range(3):
                row[ch] += cv2.calcHist([arr8], [ch], None, [256], [0, 256]).ravel()
        else:
            g = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()
            row[:3] += g
        row[3] += cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()

    def normalised(self, label: int) -> np.ndarray:
        row = self.hist[label]
        tot = row.sum(axis=1, keepdims=True)
        return np.divide(row, tot, out=np.zeros_like(row), where=tot > 0)


def summarise(values: np.ndarray) -> dict[str, float | None]:
    """Median, quartiles, min and max of the finite values (``None`` when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "min": None, "q1": None, "median": None, "q3": None, "max": None}
    q = np.percentile(v, [0, 25, 50, 75, 100])
    return {"n": int(v.size), "min": float(q[0]), "q1": float(q[1]), "median": float(q[2]),
            "q3": float(q[3]), "max": float(q[4])}  # fmt: skip


def per_class_summary(
    table: np.ndarray, labels: np.ndarray, classes: list[str], columns: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """``{class: {feature: summary}}`` for the chosen feature columns."""
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(classes):
        rows = table[labels == k]
        out[name] = {"count": len(rows)}
        for col in columns:
            out[name][col] = summarise(rows[:, FEATURES.index(col)])
    return out


def counts_by(values: list[Any]) -> dict[str, int]:
    """How many of each value (as strings), most common first."""
    from collections import Counter

    return {str(k): int(v) for k, v in Counter(values).most_common()}
