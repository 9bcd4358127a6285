"""Segmentation metrics on binary masks, per slice and per patient volume.

Empty-mask conventions (stated once, used everywhere):

* **Dice / IoU**: truth and prediction both empty → 1.0 (nothing to find, nothing
  found); exactly one empty → 0.0.
* **HD95** (MONAI ``compute_hausdorff_distance(percentile=95)``, in mm when spacing is
  given): both empty → 0.0; exactly one empty → ``nan`` (undefined), left out of means
  (``nanmean``) and counted separately.
* **Volume error**: ``pred - truth`` in mm³ (voxel count × voxel volume); the relative
  error divides by the truth volume and is ``nan`` when the truth is empty.
* **Lesion-wise detection**: lesions are 26-/8-connected components of the truth; a lesion
  is detected when any predicted voxel overlaps it. Rate = detected / lesions (``nan``
  with no lesions). False-positive components: predicted components touching no lesion.

The headline figure, as in Buda et al. 2019, is the mean over patients of the Dice of
each patient's whole volume (slices stacked in order).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def _binary(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(bool) if a.dtype != bool else a


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two binary masks of any shape (1.0 when both are empty)."""
    p, t = _binary(pred), _binary(truth)
    if p.shape != t.shape:
        raise ValueError(f"dice: shapes differ, pred {p.shape} vs truth {t.shape}")
    s = int(p.sum()) + int(t.sum())
    return 1.0 if s == 0 else 2.0 * int((p & t).sum()) / s


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Jaccard index (1.0 when both are empty)."""
    p, t = _binary(pred), _binary(truth)
    if p.shape != t.shape:
        raise ValueError(f"iou: shapes differ, pred {p.shape} vs truth {t.shape}")
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def per_slice(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Dice and IoU of every slice of ``(N, H, W)`` stacks (vectorised)."""
    p = _binary(pred).reshape(len(pred), -1)
    t = _binary(truth).reshape(len(truth), -1)
    inter = (p & t).sum(1).astype(np.float64)
    ps, ts = p.sum(1).astype(np.float64), t.sum(1).astype(np.float64)
    union = ps + ts - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(ps + ts == 0, 1.0, 2 * inter / (ps + ts))
        j = np.where(union == 0, 1.0, inter / union)
    return {"dice": d, "iou": j}


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance (MONAI), ``spacing`` in array-axis order.

    Returns 0.0 when both masks are empty and ``nan`` when exactly one is.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    p, t = _binary(pred), _binary(truth)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("nan")
    yp = torch.from_numpy(p[None, None].astype(np.float32))
    yt = torch.from_numpy(t[None, None].astype(np.float32))
    sp = None if spacing is None else [float(s) for s in spacing]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI-internal deprecation notice
        v = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=sp)
    return float(v.reshape(-1)[0])


def volume_error(pred: np.ndarray, truth: np.ndarray, voxel_volume: float = 1.0) -> dict[str, float]:
    """Absolute (mm³, signed pred − truth) and relative volume error."""
    vp = float(_binary(pred).sum()) * voxel_volume
    vt = float(_binary(truth).sum()) * voxel_volume
    return {"volume_pred": vp, "volume_true": vt, "volume_error": vp - vt,
            "volume_error_rel": (vp - vt) / vt if vt > 0 else float("nan")}


def lesion_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Lesion-wise detection via connected components (full connectivity)."""
    from skimage.measure import label

    p, t = _binary(pred), _binary(truth)
    lt, nt = label(t, return_num=True, connectivity=t.ndim)
    lp, npred = label(p, return_num=True, connectivity=p.ndim)
    detected = len(set(np.unique(lt[p])) - {0})
    fp = len(set(range(1, npred + 1)) - set(np.unique(lp[t])))
    return {"lesions": float(nt), "detected": float(detected),
            "detection_rate": detected / nt if nt else float("nan"),
            "false_positive_components": float(fp)}


def volume_metrics(pred: np.ndarray, truth: np.ndarray,
                   spacing: Sequence[float] | None = None) -> dict[str, float]:
    """All metrics of one patient volume ``(D, H, W)`` (``spacing`` in array-axis order)."""
    vox = float(np.prod(spacing)) if spacing is not None else 1.0
    out = {"dice": dice(pred, truth), "iou": iou(pred, truth), "hd95": hd95(pred, truth, spacing)}
    out.update(volume_error(pred, truth, vox))
    out.update(lesion_detection(pred, truth))
    return out


def per_patient(pred: np.ndarray, truth: np.ndarray, patients: Sequence[str],
                *, spacing: Sequence[float] | None = None, full: bool = True) -> dict[str, dict[str, float]]:
    """Metrics per patient from slice stacks ``(N, H, W)`` whose order is the slice order.

    ``full=False`` computes only Dice and IoU (fast, for validation every epoch).
    """
    pats = np.asarray(patients)
    out: dict[str, dict[str, float]] = {}
    for pid in dict.fromkeys(pats.tolist()):
        sel = pats == pid
        p, t = pred[sel], truth[sel]
        if full:
            out[str(pid)] = volume_metrics(p, t, spacing)
        else:
            out[str(pid)] = {"dice": dice(p, t), "iou": iou(p, t)}
        out[str(pid)]["slices"] = float(sel.sum())
    return out


def summarise(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Means over patients (``nan`` entries left out), plus how many were left out."""
    if not rows:
        return {}
    keys = sorted({k for r in rows.values() for k in r})
    out: dict[str, float] = {"patients": len(rows)}  # counts stay integers
    for k in keys:
        v = np.array([r.get(k, np.nan) for r in rows.values()], dtype=np.float64)
        fin = np.isfinite(v)
        out[f"mean_{k}"] = float(v[fin].mean()) if fin.any() else float("nan")
        if (~fin).any():
            out[f"undefined_{k}"] = int((~fin).sum())
    return out


def metric_units(spacing: dict[str, Any], patients: Sequence[str], *, size: int | None = None,
                 spatial_dims: int = 2) -> dict[str, str]:
    """Units of HD95 and volumes for these patients, and a note saying why: mm / mm³ when
    every patient's spacing is known (it follows any resize), else pixels / voxels of the
    model's input grid."""
    known = [spacing.get(str(p)) is not None for p in patients]
    px = "voxels" if spatial_dims == 3 else "px"
    grid = f"the {size}-px model input" if size else "the images' own grid"
    if known and all(known):
        return {"hd95": "mm", "volume": "mm³", "note": "spacing read from the files (it follows any resize)"}
    if any(known):
        return {"hd95": f"mm or {px}", "volume": "mm³ or voxels",
                "note": f"spacing known for some patients only: mm for those, else {px} of {grid}"}
    return {"hd95": px, "volume": "voxels", "note": f"no spacing in the files: {px} and voxels of {grid}"}
