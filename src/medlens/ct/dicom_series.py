"""Read one DICOM CT series folder as a Hounsfield-unit volume, refusing inconsistent series.

Why: a missing slice, two series in one folder, another modality or slices that do not stack
into one grid put nodules in the wrong place silently; each check here names the file.
Headers are read with pydicom; slices are sorted by their position along the slice normal
(never by file name) and stored values are mapped to HU with each slice's
RescaleSlope/RescaleIntercept. The public entry is :func:`medlens.ct.scan.read_ct`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from medlens.ct.scan_checks import check_finite, check_spacing
from medlens.errors import BadInputError
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume

#: A step this many times the usual one between neighbouring slices means missing slices.
GAP_FACTOR = 1.5


def is_dicom_file(f: Path) -> bool:
    """``.dcm`` files, and suffix-less files with the DICOM preamble (``DICM`` at byte 128)."""
    if f.suffix.lower() == ".dcm":
        return True
    if f.suffix:
        return False
    try:
        with open(f, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def series_uid_of(f: Path) -> str | None:
    """SeriesInstanceUID of one DICOM file, None when unreadable (reported when the scan is read)."""
    import pydicom

    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # noqa: BLE001 - a broken file is reported when the scan is read
        return None
    uid = ds.get("SeriesInstanceUID")
    return str(uid) if uid else None


def read_dicom_ct(folder: Path) -> Volume:
    """One DICOM CT series folder as float32 HU ``(D, H, W)``; BadInputError names the faulty file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and is_dicom_file(f))
    if not files:
        raise BadInputError(f"{folder}: no DICOM files (.dcm) in this folder; give the folder of one CT series")
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, ValueError, EOFError) as e:
            raise BadInputError(f"{f}: not a readable DICOM file ({type(e).__name__}: {e})") from None
        slices.append((f, ds))

    series: dict[str, list[Path]] = {}
    for f, ds in slices:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(f)
    if len(series) > 1:
        parts = "; ".join(f"{uid or '(no SeriesInstanceUID)'}: {len(fs)} files, e.g. {fs[0].name}"
                          for uid, fs in series.items())
        raise BadInputError(f"{folder}: mixed series — {len(series)} DICOM series in one folder ({parts}); "
                            "put each series in its own folder")
    for f, ds in slices:
        modality = str(ds.get("Modality", "")).upper()
        if modality != "CT":
            raise BadInputError(f"{f}: modality is {modality or 'missing'!s}, not CT; medlens ct reads CT scans only")

    geo = [_slice_geometry(f, ds) for f, ds in slices]
    orient = np.asarray([g[0] for g in geo])
    if np.abs(orient - orient[0]).max() > 1e-3:
        bad = int(np.argmax(np.abs(orient - orient[0]).max(axis=1)))
        raise BadInputError(f"{slices[bad][0]}: ImageOrientationPatient {list(orient[bad])} differs from "
                            f"{slices[0][0].name}'s {list(orient[0])}; the series is not one volume")
    row_cos, col_cos = orient[0, :3], orient[0, 3:]
    normal = np.cross(row_cos, col_cos)
    pos = np.asarray([g[1] for g in geo])
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[k] for k in order]
    pos, along = pos[order], along[order]
    for key in ("Rows", "Columns"):
        vals = {int(ds.get(key, 0)) for _, ds in slices}
        if len(vals) > 1:
            raise BadInputError(f"{folder}: slices have different {key} {sorted(vals)}; the series is not one volume")
    pix = np.asarray([g[2] for g in geo])
    if np.abs(pix - pix[0]).max() > 1e-4:
        raise BadInputError(f"{folder}: slices have different PixelSpacing "
                            f"({sorted({tuple(p) for p in pix.tolist()})}); the series is not one volume")

    if len(slices) > 1:
        steps = np.diff(along)
        if (steps < 1e-3).any():
            k = int(np.argmax(steps < 1e-3))
            raise BadInputError(f"{folder}: {slices[k][0].name} and {slices[k + 1][0].name} have the same "
                                f"position ({along[k]:.3f} mm along the slice normal); duplicate slice or mixed "
                                "acquisitions — keep one")
        usual = float(np.median(steps))
        if steps.max() > GAP_FACTOR * usual:
            k = int(np.argmax(steps))
            missing = round(steps[k] / usual) - 1
            raise BadInputError(
                f"{folder}: missing slice — gap of {steps[k]:.3f} mm between {slices[k][0].name} "
                f"({along[k]:.3f} mm) and {slices[k + 1][0].name} ({along[k + 1]:.3f} mm) where slices are "
                f"{usual:.3f} mm apart (about {missing} slice(s) missing); restore the series")
        if steps.max() - steps.min() > 0.1 * usual + 0.01:
            raise BadInputError(f"{folder}: uneven slice spacing ({steps.min():.3f}–{steps.max():.3f} mm); "
                                "resample the series to a regular grid first")
        step_vec = (pos[-1] - pos[0]) / (len(slices) - 1)
        dz = float(np.linalg.norm(step_vec))
        slice_dir = step_vec / dz  # follows a gantry tilt (sheared grid) if there is one
    else:
        dz = float(slices[0][1].get("SliceThickness") or 1.0)
        slice_dir = normal
    dy, dx = float(pix[0][0]), float(pix[0][1])  # PixelSpacing = (row spacing, column spacing)
    check_spacing(folder, (dx, dy, dz))
    direction = np.column_stack([row_cos, col_cos, slice_dir])
    try:
        geometry = Geometry((dx, dy, dz), tuple(pos[0]), tuple(direction.ravel()))
    except ValueError as e:
        raise BadInputError(f"{folder}: inconsistent slice geometry ({e})") from None

    arr = np.empty((len(slices), int(slices[0][1].Rows), int(slices[0][1].Columns)), dtype=np.float32)
    for k, (f, ds) in enumerate(slices):
        try:
            px = ds.pixel_array
        except Exception as e:  # noqa: BLE001 - pydicom raises many types for undecodable data
            raise BadInputError(f"{f}: cannot decode pixel data ({type(e).__name__}: {e})") from None
        if px.shape != arr.shape[1:]:
            raise BadInputError(f"{f}: pixel data has shape {px.shape}, header says {arr.shape[1:]}")
        try:
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
        except (TypeError, ValueError):
            slope = intercept = math.nan
        if not (math.isfinite(slope) and math.isfinite(intercept)):
            raise BadInputError(f"{f}: RescaleSlope/RescaleIntercept {ds.get('RescaleSlope')!r}/"
                                f"{ds.get('RescaleIntercept')!r} are not finite numbers; cannot map to HU")
        np.multiply(px, np.float32(slope), out=arr[k], casting="unsafe")
        arr[k] += np.float32(intercept)
    if np.issubdtype(px.dtype, np.floating):  # float pixel data (rare) may hold NaN
        check_finite(folder, arr)
    first = slices[0][1]
    meta = {"seriesuid": str(first.get("SeriesInstanceUID", "")) or folder.name, "modality": "CT",
            "source_format": "dicom", "patient_id": str(first.get("PatientID", "")),
            "study_uid": str(first.get("StudyInstanceUID", "")),
            "sop_uids": [str(ds.get("SOPInstanceUID", "")) for _, ds in slices],
            "files": [str(f) for f, _ in slices]}
    return Volume(arr, geometry, path=str(folder), has_geometry=True, meta=meta)


def _slice_geometry(f: Path, ds: Any) -> tuple[list[float], list[float], list[float]]:
    """(ImageOrientationPatient, ImagePositionPatient, PixelSpacing) of one slice, checked."""
    out = []
    for key, n in (("ImageOrientationPatient", 6), ("ImagePositionPatient", 3), ("PixelSpacing", 2)):
        v = ds.get(key)
        try:
            vals = [float(x) for x in v] if v is not None else []
        except (TypeError, ValueError):
            vals = []
        if len(vals) != n or not np.all(np.isfinite(vals)):
            raise BadInputError(f"{f}: {key} is missing or malformed ({v!r}); cannot place the slice in space")
        out.append(vals)
    return out[0], out[1], out[2]
