"""Checks every CT reader applies, whatever the file format: credible spacing, finite voxels.

Why apart: :mod:`medlens.ct.scan` (MetaImage/NIfTI) and :mod:`medlens.ct.dicom_series` (DICOM)
refuse the same faults with the same messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError

#: Largest credible in-plane pixel size and slice step of a CT scan, mm.
MAX_PIXEL_MM = 10.0
MAX_SLICE_MM = 20.0


def check_spacing(p: Path, spacing_xyz: Any) -> None:
    """Refuse spacing (x, y, z mm) no CT scanner makes, naming ``p``."""
    sx, sy, sz = (float(v) for v in spacing_xyz)
    if min(sx, sy) <= 0 or max(sx, sy) > MAX_PIXEL_MM or sz <= 0 or sz > MAX_SLICE_MM:
        raise BadInputError(f"{p}: absurd voxel spacing {sx:g} × {sy:g} × {sz:g} mm (x, y, z); a CT scan has "
                            f"0 < in-plane ≤ {MAX_PIXEL_MM:g} mm and 0 < slice step ≤ {MAX_SLICE_MM:g} mm — "
                            "fix the header")


def check_finite(p: Path, arr: np.ndarray) -> None:
    """Refuse NaN or infinite voxels, naming ``p``."""
    bad = ~np.isfinite(arr)
    if bad.any():
        raise BadInputError(f"{p}: {int(bad.sum())} NaN or infinite voxels; fix the file")
