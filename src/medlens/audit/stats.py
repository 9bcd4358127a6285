"""Per-image measurements and per-class summaries (size, colour, sharpness).

Per image we keep a handful of floats (the "feature table", O(N) floats, no pixels);
per class, fixed-size 256-bin colour histograms. Sharpness is the variance of the
Laplacian of the grey image (OpenCV), the usual focus measure; the blood-cell project's
sum of absolute Laplacian is also kept, per pixel, as ``lap_abs``.
"""

from __future__ import annotations

from collections.abc import Sequence
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


#: Per-patient colour statistics: RGB (0–255) and the optical-density haematoxylin and eosin
#: amounts of :func:`skimage.color.rgb2hed`, on tissue pixels only.
COLOUR_CHANNELS = ("R", "G", "B", "H", "E")
#: Smallest robust scale per channel, so near-identical patients are not flagged for a tiny spread.
COLOUR_SCALE_FLOOR = (1.0, 1.0, 1.0, 0.002, 0.002)
COLOUR_MAX_PIXELS = 4096  # tissue pixels taken per image (a regular stride): bounded cost
COLOUR_MIN_PATIENTS = 5  # fewer patients: the table, but no outlier flags


def tissue_colour(arr8: np.ndarray, *, max_pixels: int = COLOUR_MAX_PIXELS) -> np.ndarray | None:
    """``(N, 5)`` R, G, B, H, E of an ``(H, W, C)`` uint8 RGB image's tissue pixels (the pixels
    stain normalisation works on: every channel absorbing light), or ``None`` for a grey image or
    one without tissue."""
    from skimage.color import rgb2hed

    from medlens.transforms.stain import tissue_mask

    if arr8.ndim != 3 or arr8.shape[2] < 3:
        return None
    rgb = arr8[..., :3]
    px = rgb[tissue_mask(rgb)]
    if len(px) == 0:
        return None
    if len(px) > max_pixels:
        px = px[:: int(np.ceil(len(px) / max_pixels))]
    hed = rgb2hed(px[None].astype(np.float64) / 255.0)[0]
    return np.concatenate([px.astype(np.float64), hed[:, :2]], axis=1)


class PatientColour:
    """Running per-patient sums of tissue R, G, B, H, E (O(patients) memory)."""

    def __init__(self) -> None:
        self.images: dict[str, int] = {}
        self.n: dict[str, int] = {}
        self.sum: dict[str, np.ndarray] = {}
        self.sumsq: dict[str, np.ndarray] = {}

    def add(self, patient: str | None, arr8: np.ndarray) -> None:
        """Add one image of ``patient`` (ignored when the patient is unknown or the image has no tissue)."""
        if patient is None:
            return
        v = tissue_colour(arr8)
        if v is None:
            return
        p = str(patient)
        self.images[p] = self.images.get(p, 0) + 1
        self.n[p] = self.n.get(p, 0) + len(v)
        self.sum[p] = self.sum.get(p, 0) + v.sum(0)
        self.sumsq[p] = self.sumsq.get(p, 0) + (v * v).sum(0)

    def table(self, *, z_threshold: float = 3.0) -> dict[str, Any]:
        """Mean and SD per patient and channel, robust z of each mean against the other patients,
        and the patients flagged (see :func:`colour_outliers`)."""
        names = sorted(self.n)
        if not names:
            return {"status": "skipped", "reason": "no RGB tissue pixels with known patients",
                    "channels": list(COLOUR_CHANNELS), "patients": {}, "flagged": []}
        means = np.stack([self.sum[p] / self.n[p] for p in names])
        sds = np.stack([np.sqrt(np.maximum(self.sumsq[p] / self.n[p] - (self.sum[p] / self.n[p]) ** 2, 0))
                        for p in names])
        return colour_outliers(names, means, sds, [self.images[p] for p in names], [self.n[p] for p in names],
                               z_threshold=z_threshold)


def robust_z(values: np.ndarray, floor: Sequence[float] | float = 0.0) -> np.ndarray:
    """``(P, F)`` → robust z per column: ``(x − median) / max(1.4826·MAD, floor)``."""
    v = np.asarray(values, dtype=np.float64)
    med = np.median(v, axis=0)
    scale = np.maximum(1.4826 * np.median(np.abs(v - med), axis=0), np.asarray(floor, dtype=np.float64))
    return (v - med) / scale


def colour_outliers(patients: Sequence[str], means: np.ndarray, sds: np.ndarray, n_images: Sequence[int],
                    n_pixels: Sequence[int], *, z_threshold: float = 3.0) -> dict[str, Any]:
    """The per-patient colour table: ``{"patients": {id: {mean, sd, z, max_z, flagged, …}}, "flagged": [...]}``.

    A patient is flagged when the robust z (:func:`robust_z`, against all patients) of any channel
    mean exceeds ``z_threshold`` — a stain or scanner unlike the others'. With fewer than
    :data:`COLOUR_MIN_PATIENTS` patients nothing is flagged (a median of few is no reference).
    """
    ch = COLOUR_CHANNELS
    can_flag = len(patients) >= COLOUR_MIN_PATIENTS
    z = robust_z(means, COLOUR_SCALE_FLOOR) if can_flag else np.zeros_like(means)
    rows: dict[str, Any] = {}
    for i, p in enumerate(patients):
        worst = int(np.argmax(np.abs(z[i])))
        rows[p] = {"n_images": int(n_images[i]), "n_pixels": int(n_pixels[i]),
                   "mean": {c: round(float(means[i, j]), 4) for j, c in enumerate(ch)},
                   "sd": {c: round(float(sds[i, j]), 4) for j, c in enumerate(ch)},
                   "z": {c: round(float(z[i, j]), 2) for j, c in enumerate(ch)},
                   "max_z": round(float(abs(z[i, worst])), 2), "worst_channel": ch[worst],
                   "flagged": bool(can_flag and abs(z[i, worst]) > z_threshold)}
    flagged = sorted((p for p in rows if rows[p]["flagged"]), key=lambda p: -rows[p]["max_z"])
    return {"status": "ok" if can_flag else "too few patients to flag",
            "channels": list(ch), "z_threshold": z_threshold,
            "tissue": "pixels absorbing light in R, G and B (optical density ≥ 0.15 at I0 = 240)",
            "h_e": "skimage.color.rgb2hed haematoxylin and eosin amounts (optical density units)",
            "patients": rows, "flagged": flagged}


def colour_warning(colour: dict[str, Any]) -> str | None:
    """One line naming the flagged patients (``None`` when there are none)."""
    flagged = colour.get("flagged") or []
    if not flagged:
        return None
    rows = colour["patients"]
    names = ", ".join(f"{p} ({rows[p]['worst_channel']} z={rows[p]['max_z']:.1f})" for p in flagged[:10])
    more = f" and {len(flagged) - 10} more" if len(flagged) > 10 else ""
    return (f"Stain/colour of {len(flagged)} patient(s) lies far from the others (robust z > "
            f"{colour['z_threshold']:g} on tissue R, G, B, H or E): {names}{more}. A model can learn the stain "
            "instead of the tissue; consider stain normalisation (preprocess.stain_normalize) or augment.hed.")
