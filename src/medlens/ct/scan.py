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
XML read refers to). Nothing here writes to an input. DICOM series are read in
:mod:`medlens.ct.dicom_series`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.ct.dicom_series import GAP_FACTOR as GAP_FACTOR
from medlens.ct.dicom_series import is_dicom_file, read_dicom_ct, series_uid_of
from medlens.ct.scan_checks import MAX_PIXEL_MM as MAX_PIXEL_MM
from medlens.ct.scan_checks import MAX_SLICE_MM as MAX_SLICE_MM
from medlens.ct.scan_checks import check_finite, check_spacing
from medlens.errors import BadInputError
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume, read_volume, volume_suffix
from medlens.io.walk import walk

logger = logging.getLogger(__name__)

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
        return read_dicom_ct(p)
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
            check_spacing(p, spacing)
    try:
        vol = read_volume(p)  # NaN/inf voxels are refused there, naming the file
    except ValueError as e:  # the geometry itself is impossible (singular direction, ...)
        raise BadInputError(f"{p}: invalid geometry in the header ({e})") from None
    if vol.array.ndim != 3:
        raise BadInputError(f"{p}: expected one 3D CT volume, got an array of shape {vol.array.shape} "
                            "(several channels or time points)")
    check_spacing(p, vol.geometry.spacing)
    arr = vol.array.astype(np.float32, copy=False)
    check_finite(p, arr)
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
    by path. Hidden files and folders are skipped; linked folders are followed (a link back
    up the tree is read once). A file ``root`` is one scan.

    Raises:
        BadInputError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise BadInputError(f"{root}: not found")
    if root.is_file():
        return [_file_ref(root)] if volume_suffix(root) in CT_FILE_SUFFIXES else []
    refs: list[ScanRef] = []
    for here, files in walk(root):
        dicoms = []
        for name in files:
            f = here / name
            if volume_suffix(f) in CT_FILE_SUFFIXES:
                refs.append(_file_ref(f))
            elif is_dicom_file(f):
                dicoms.append(f)
        if dicoms:
            refs.append(ScanRef(series_uid_of(dicoms[0]) or here.name, here))
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




def _geometry(v: Volume | Geometry) -> Geometry:
    return v if isinstance(v, Geometry) else v.geometry


def _file_ref(f: Path) -> ScanRef:
    suffix = volume_suffix(f)
    return ScanRef(f.name[: -len(suffix)] if suffix else f.stem, f)
