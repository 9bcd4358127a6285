"""Nodule size measured on the image: the diameter of the lump at a finding's centre.

Why: a blob candidate's ``diameter_mm`` is one of the detector's few scales (2–13 mm radii), not
a measurement — LIDC-IDRI-0001's 24 mm nodule was reported at 18 mm, and on phantoms the blob
findings' diameters correlated 0.49 with the truth (U-Net components, which segment the nodule,
0.95). Size is what a reader acts on (follow-up rules go by millimetres), and the one-per-lump
rule (:func:`medlens.ct.findings.one_per_lump`) compares radii.

Per finding, on an isotropic crop around its centre (no Python loop over voxels):

1. a half-maximum threshold between the lump (90th percentile within 1.5 mm of the centre) and
   the lung (median of the crop's voxels below −500 HU): the same rule for solid and
   ground-glass nodules, and partial volume cut at half way;
2. the lump's core: the point near the centre deepest inside the thresholded region (Euclidean
   distance to its background, mm), depth ``r0``;
3. opening by reconstruction: the region deeper than ``r0 / 2`` connected to the core, grown back
   by ``r0 / 2`` inside the thresholded region and kept within ``1.5 r0 + 1 mm`` of the core — a
   vessel thinner than ``r0 / 2`` and the pleura beyond the nodule are cut away;
4. the equivalent-sphere diameter of what remains — measured again on a crop for twice the
   scale when it reaches the crop's edge (a finding's scale can be a third of its nodule's size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medlens.ct.crops import CropSpec, extract_crops
from medlens.ct.findings import Finding
from medlens.io.volumes import Volume

LUNG_BELOW_HU = -500.0  # voxels darker than this are the lung the lump is measured against
MIN_CONTRAST_HU = 100.0  # a lump less than this above the lung is not measured
WINDOW = (-1000.0, 400.0)


def crop_spec_for(scale_mm: float) -> CropSpec:
    """An isotropic cube wide enough for a lump of about ``scale_mm`` diameter (the finding's
    estimate; measured lumps are up to twice it): 2 × diameter + 8 mm, at most 64 voxels a side."""
    side_mm = 2.0 * max(float(scale_mm), 4.0) + 8.0
    spacing = max(0.5, side_mm / 64.0)
    n = int(np.ceil(side_mm / spacing))
    return CropSpec((n, n, n), (spacing, spacing, spacing), WINDOW)


def measure_diameter(hu: np.ndarray, spacing_mm: float) -> float:
    """Equivalent-sphere diameter (mm) of the lump at the centre of the isotropic crop ``hu``
    (HU, a cube of ``spacing_mm`` voxels; see the module docstring); NaN when there is no lump or
    it reaches the crop's edge."""
    return _measure(hu, spacing_mm)[0]


def _measure(hu: np.ndarray, spacing_mm: float) -> tuple[float, bool]:
    """(diameter or NaN, whether the lump reached the crop's edge)."""
    g = [(np.arange(n) - (n - 1) / 2.0) * spacing_mm for n in hu.shape]
    zz, yy, xx = np.meshgrid(*g, indexing="ij")
    r = np.sqrt(zz**2 + yy**2 + xx**2)
    centre = r <= max(1.5, spacing_mm)
    peak = float(np.percentile(hu[centre], 90))
    dark = hu < LUNG_BELOW_HU
    lung = float(np.median(hu[dark])) if dark.any() else -850.0
    if peak < lung + MIN_CONTRAST_HU:
        return float("nan"), False
    lump = hu > 0.5 * (peak + lung)
    depth = ndimage.distance_transform_edt(lump, sampling=spacing_mm)
    near = r <= max(3.0, float(depth[r <= max(1.0, spacing_mm)].max()))
    r0 = float(depth[near].max())
    if r0 <= 0:
        return float("nan"), False
    core_at = np.unravel_index(int(np.argmax(np.where(near, depth, -1.0))), depth.shape)
    labels, _ = ndimage.label(depth >= 0.5 * r0)
    core = labels == labels[core_at]
    kept = (ndimage.distance_transform_edt(~core, sampling=spacing_mm) <= 0.5 * r0) & lump
    from_core = np.sqrt(sum((a - ax[i]) ** 2 for a, ax, i in zip((zz, yy, xx), g, core_at, strict=True)))
    kept &= from_core <= 1.5 * r0 + 1.0
    if any(kept.take(i, axis=a).any() for a in range(3) for i in (0, -1)):
        return float("nan"), True  # the lump reaches the crop's edge: measure it on a larger crop
    return float((6.0 * kept.sum() * spacing_mm**3 / np.pi) ** (1.0 / 3.0)), False


#: A lump still at the crop's edge is measured again on a crop for twice its scale, up to this
#: scale (mm): a blob of the detector's 7 mm scale off the centre of a 24 mm nodule needs two steps.
MAX_SCALE_MM = 40.0


def measure_findings(volume: Volume, findings: Sequence[Finding]) -> np.ndarray:
    """The measured diameter (mm) of each finding's lump (NaN where there is none, or where it
    runs beyond the largest crop: the chest wall, the mediastinum)."""
    out = np.full(len(findings), np.nan)
    scale = np.array([max(float(f.diameter_mm), 4.0) for f in findings])
    todo = list(range(len(findings)))
    lo, hi = WINDOW
    while todo:
        by_spec: dict[CropSpec, list[int]] = {}
        for k in todo:
            by_spec.setdefault(crop_spec_for(scale[k]), []).append(k)
        again = []
        for spec, idx in by_spec.items():
            centres = np.array([findings[k].center_irc for k in idx], dtype=np.float64)
            crops = extract_crops(volume.array, volume.geometry.array_spacing, centres, spec)
            for k, crop in zip(idx, crops, strict=True):
                out[k], at_edge = _measure(np.asarray(crop, dtype=np.float64) * (hi - lo) + lo, spec.spacing_mm[0])
                if at_edge and 2 * scale[k] <= MAX_SCALE_MM:
                    scale[k] *= 2
                    again.append(k)
        todo = again
    return out

