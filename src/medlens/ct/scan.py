"""Read CT scans as Hounsfield-unit volumes and find every scan under a folder.

Why a CT reader beside :func:`medlens.io.volumes.read_volume`: a CT scan must be refused
with a reason when it is not one consistent volume — a missing slice, two series in one
folder, another modality, a ``.mhd`` whose ``.raw`` is missing or cut short, absurd
spacing — because a detector run on such a scan silently puts nodules in the wrong place.
DICOM headers are read with pydicom so the checks can name the file; slices are sorted by
their position along the slice normal (never by file name) and stored values are mapped
to HU with each slice's RescaleSlope/RescaleIntercept.

Conventions are the project's (:mod:`medlens.io.geometry`): ``volume.array`` is float32
HU ``(D, H, W)`` = ``(I, R, C)``; world coordinates are LPS mm. ``volume.meta`` holds
``seriesuid`` (DICOM SeriesInstanceUID, or the file stem), ``modality``,
``source_format`` (``"dicom"``, ``"metaimage"``, ``"nifti"``) and, for DICOM,
``patient_id``, ``study_uid``, ``sop_uids`` and ``files`` in slice order (what an LIDC
XML read refers to). Nothing here writes to an input.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume, read_volume, volume_suffix

logger = logging.getLogger(__name__)

#: Largest credible in-plane pixel size and slice step of a CT scan, mm.
MAX_PIXEL_MM = 10.0
MAX_SLICE_MM = 20.0
#: A step this many times the usual one between neighbouring slices means missing slices.
GAP_FACTOR = 1.5
#: File suffixes read as CT volumes (a folder of DICOM files is a scan too).
CT_FILE_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz")

_MET_TYPES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4,
              "MET_INT": 4, "MET_ULONG": 8, "MET_LONG": 8, "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8,
              "MET_FLOAT": 4, "MET_DOUBLE": 8}


@dataclass(frozen=True)
class ScanRef:
    """One scan found on disk: its id and the file (or DICOM series folder) to read."""

    seriesuid: str
    path: Path


# -- public API -----------------------------------------------------------------------------
def read_ct(path: str | os.PathLike[str]) -> Volume:
    """Read one CT scan as float32 HU ``(D, H, W)`` with its geometry.

    Args:
        path: a folder holding one DICOM series, a ``.mhd`` (with its ``.raw``), ``.mha``,
            ``.nii`` or ``.nii.gz`` file.

    Raises:
        BadInputError: naming the file and the fault — missing slice (gap in positions),
            several series in one folder, modality not CT, ``.mhd`` without its data file,
            truncated data file, absurd spacing (≤ 0, > 10 mm in-plane, > 20 mm between
            slices), non-finite voxels, unreadable file.
    """
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: not found; give a DICOM series folder or a .mhd/.mha/.nii[.gz] file")
    if p.is_dir():
        return _read_dicom_ct(p)
    suffix = volume_suffix(p)
    if suffix not in CT_FILE_SUFFIXES:
        raise BadInputError(f"{p}: not a CT volume file ({suffix or 'no suffix'}); "
                            f"give a DICOM series folder or one of {', '.join(CT_FILE_SUFFIXES)}")
    modality = "CT"
    if suffix in (".mhd", ".mha"):
        fields = _check_metaimage_header(p) if suffix == ".mhd" else _read_mha_header(p)
        modality = _metaimage_modality(p, fields)
        try:
            spacing = [float(v) for v in fields.get("ElementSpacing", "1 1 1").split()]
        except ValueError:
            raise BadInputError(f"{p}: malformed ElementSpacing {fields.get('ElementSpacing')!r}") from None
        if len(spacing) == 3:
            _check_spacing(p, spacing)
    try:
        vol = read_volume(p)  # NaN/inf voxels are refused there, naming the file
    except ValueError as e:  # the geometry itself is impossible (singular direction, ...)
        raise BadInputError(f"{p}: invalid geometry in the header ({e})") from None
    if vol.array.ndim != 3:
        raise BadInputError(f"{p}: expected one 3D CT volume, got an array of shape {vol.array.shape} "
                            "(several channels or time points)")
    _check_spacing(p, vol.geometry.spacing)
    arr = vol.array.astype(np.float32, copy=False)
    _check_finite(p, arr)
    if arr.size and float(arr.min()) >= 0 and float(arr.max()) > 1500:
        logger.warning("%s: no voxel below 0 — the values look like stored scanner values, not "
                       "Hounsfield units (air is -1000 HU)", p)
    stem = p.name[: -len(suffix)] if suffix else p.stem
    meta: dict[str, Any] = {"seriesuid": stem, "modality": modality,
                            "source_format": "nifti" if suffix.startswith(".nii") else "metaimage"}
    return Volume(arr, vol.geometry, path=str(p), has_geometry=True, meta=meta)


def find_scans(root: str | os.PathLike[str]) -> list[ScanRef]:
    """Every CT scan under ``root``: LUNA16 ``subset*/*.mhd``, ``.mha``, NIfTI files and
    DICOM series folders (a folder with ``.dcm`` files, or suffix-less DICOM files), sorted
    by path. Hidden files and folders are skipped. A file ``root`` is one scan.

    Raises:
        BadInputError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise BadInputError(f"{root}: not found")
    if root.is_file():
        return [_file_ref(root)] if volume_suffix(root) in CT_FILE_SUFFIXES else []
    refs: list[ScanRef] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        dicoms = []
        for name in sorted(files):
            if name.startswith("."):
                continue
            f = here / name
            if volume_suffix(f) in CT_FILE_SUFFIXES:
                refs.append(_file_ref(f))
            elif _is_dicom_file(f):
                dicoms.append(f)
        if dicoms:
            refs.append(ScanRef(_series_uid_of(dicoms[0]) or here.name, here))
    return sorted(refs, key=lambda r: str(r.path))


def read_scans(refs: Iterable[ScanRef]) -> Iterator[tuple[ScanRef, Volume | BadInputError]]:
    """Read scans one by one, yielding ``(ref, volume)`` or ``(ref, error)``: one bad scan is
    reported and the others go on. Only :class:`BadInputError` is caught."""
    for ref in refs:
        try:
            yield ref, read_ct(ref.path)
        except BadInputError as e:
            logger.warning("%s", e)
            yield ref, e


def xyz_to_irc(volume: Volume | Geometry, xyz: Any) -> np.ndarray:
    """LPS mm ``(..., 3)`` ``(x, y, z)`` → continuous voxel indices ``(..., 3)`` ``(i, r, c)``."""
    return _geometry(volume).world_to_index(xyz)


def irc_to_xyz(volume: Volume | Geometry, irc: Any) -> np.ndarray:
    """Voxel indices ``(..., 3)`` ``(i, r, c)`` → LPS mm ``(..., 3)`` ``(x, y, z)``."""
    return _geometry(volume).index_to_world(irc)


def slice_z_positions(volume: Volume) -> np.ndarray:
    """World z (mm) of each slice's first voxel, ``(D,)``: what DICOM and LIDC XML call the
    slice position (imageZposition) for an axial scan."""
    d = volume.spatial_shape[0]
    idx = np.zeros((d, 3))
    idx[:, 0] = np.arange(d)
    return volume.geometry.index_to_world(idx)[:, 2]


# -- DICOM ----------------------------------------------------------------------------------
def _is_dicom_file(f: Path) -> bool:
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


def _series_uid_of(f: Path) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # noqa: BLE001 - a broken file is reported when the scan is read
        return None
    uid = ds.get("SeriesInstanceUID")
    return str(uid) if uid else None


def _read_dicom_ct(folder: Path) -> Volume:
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and _is_dicom_file(f))
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
    _check_spacing(folder, (dx, dy, dz))
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
        _check_finite(folder, arr)
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


# -- MetaImage --------------------------------------------------------------------------------
def _read_mhd_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z_]+)\s*=\s*(.*?)\s*$", line)
        if m:
            fields[m.group(1)] = m.group(2)
    return fields


def _read_mha_header(p: Path) -> dict[str, str]:
    """Header fields of a ``.mha`` (text up to ``ElementDataFile = LOCAL``)."""
    with open(p, "rb") as fh:
        head = fh.read(8192)
    text = head.split(b"ElementDataFile", 1)[0].decode("latin-1", errors="replace")
    return _read_mhd_fields(text)


def _metaimage_modality(p: Path, fields: dict[str, str]) -> str:
    """MetaImage's optional ``Modality`` (LUNA16 files have none: CT is assumed)."""
    mod = fields.get("Modality", "").strip().upper()
    if mod and mod not in ("MET_MOD_CT", "CT"):
        raise BadInputError(f"{p}: Modality is {fields['Modality']}, not CT; medlens ct reads CT scans only")
    return "CT"


def _check_metaimage_header(p: Path) -> dict[str, str]:
    """Check a ``.mhd``: its data file exists and is as long as the header says; its fields."""
    try:
        fields = _read_mhd_fields(p.read_text(encoding="latin-1"))
    except OSError as e:
        raise BadInputError(f"{p}: cannot read header ({e.strerror})") from None
    data = fields.get("ElementDataFile", "")
    if not data:
        raise BadInputError(f"{p}: MetaImage header has no ElementDataFile line; the file is not a .mhd header")
    if data.upper() == "LOCAL" or data.upper().startswith("LIST") or "%" in data:
        return fields
    raw = p.parent / data
    if not raw.is_file():
        raise BadInputError(f"{p}: its data file {raw.name} is missing (expected at {raw}); "
                            "copy the .raw beside the .mhd")
    compressed = fields.get("CompressedData", "False").strip().lower() == "true"
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        size = _MET_TYPES[fields.get("ElementType", "").strip().upper()]
    except (ValueError, KeyError):
        raise BadInputError(f"{p}: header has a malformed DimSize/ElementType "
                            f"({fields.get('DimSize')!r}, {fields.get('ElementType')!r})") from None
    if not compressed and dims:
        need = int(np.prod(dims)) * channels * size
        have = raw.stat().st_size
        if have < need:
            raise BadInputError(f"{p}: data file {raw.name} is truncated: {have} bytes, the header "
                                f"(DimSize {' '.join(map(str, dims))}, {fields.get('ElementType')}) needs {need}")
    return fields


# -- shared checks ----------------------------------------------------------------------------
def _check_spacing(p: Path, spacing_xyz: Any) -> None:
    sx, sy, sz = (float(v) for v in spacing_xyz)
    if min(sx, sy) <= 0 or max(sx, sy) > MAX_PIXEL_MM or sz <= 0 or sz > MAX_SLICE_MM:
        raise BadInputError(f"{p}: absurd voxel spacing {sx:g} × {sy:g} × {sz:g} mm (x, y, z); a CT scan has "
                            f"0 < in-plane ≤ {MAX_PIXEL_MM:g} mm and 0 < slice step ≤ {MAX_SLICE_MM:g} mm — "
                            "fix the header")


def _check_finite(p: Path, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise BadInputError(f"{p}: {int(bad.sum())} NaN or infinite voxels; fix the file")


def _geometry(v: Volume | Geometry) -> Geometry:
    return v if isinstance(v, Geometry) else v.geometry


def _file_ref(f: Path) -> ScanRef:
    suffix = volume_suffix(f)
    return ScanRef(f.name[: -len(suffix)] if suffix else f.stem, f)
