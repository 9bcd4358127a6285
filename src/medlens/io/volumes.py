"""Volumes with their geometry: NIfTI, MetaImage, NRRD, DICOM series (and 2D masks).

Contract:

* :class:`Volume.array` is numpy, ``(D, H, W)`` for one channel or ``(C, D, H, W)`` for
  several (channel first, as everywhere in medlens).
* :attr:`Volume.geometry` is a :class:`~medlens.io.geometry.Geometry` (the project's one
  axis convention, see :mod:`medlens.io.geometry`): ``spacing``, ``origin`` and
  ``direction`` in SimpleITK's physical (x, y, z) order, in mm, patient LPS coordinates
  (``spacing[0]`` is the step along the last array axis W; ``direction`` is the flattened
  3×3 row-major cosine matrix); ``Volume.spacing`` etc. read through to it.
  ``geometry.array_spacing`` is the spacing in array order (D, H, W).
* A 2D image (PNG/TIFF/JPEG) read as a volume has no geometry: it becomes ``(C, 1, H, W)``
  with spacing 1 mm, origin 0, identity direction, and a :class:`UserWarning` says so.
  A 2D file that *has* geometry (a 2D NIfTI/MetaImage) becomes one slice of a 3D grid.
* NaN or infinite voxels are refused (:class:`~medlens.errors.BadInputError` naming the
  file) unless ``allow_nan=True``.
* Nothing here writes to, moves or deletes an input; writes are atomic.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError
from medlens.io.geometry import Geometry

logger = logging.getLogger(__name__)

#: Volume file suffixes read with SimpleITK (compound ones first).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
#: 2D formats a mask may be written in.
MASK_2D_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")


@dataclass
class Volume:
    """A voxel array with its physical geometry (see the module docstring for axes)."""

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry.identity)
    path: str | None = None
    has_geometry: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.geometry.ndim != 3:
            raise ValueError(f"Volume: geometry must be 3D, got {self.geometry.ndim}D (use Geometry.as_3d())")

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm, ITK order ``(x, y, z)`` (``geometry.array_spacing`` is (D, H, W))."""
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, ...]:
        return self.geometry.origin

    @property
    def direction(self) -> tuple[float, ...]:
        return self.geometry.direction

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` whatever the channel count."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[0])


def volume_suffix(path: str | os.PathLike[str]) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole; '' when none is known."""
    name = Path(path).name.lower()
    for s in VOLUME_SUFFIXES:
        if name.endswith(s):
            return s
    return Path(name).suffix


def is_volume_path(path: str | os.PathLike[str]) -> bool:
    """True for NIfTI/MetaImage/NRRD files and folders holding a DICOM series."""
    p = Path(path)
    if p.is_dir():
        return any(q.suffix.lower() in (".dcm", "") for q in p.iterdir() if q.is_file())
    return volume_suffix(p) in VOLUME_SUFFIXES


def read_volume(path: str | os.PathLike[str], *, allow_nan: bool = False) -> Volume:
    """Read a volume file, a DICOM series folder, or a 2D image as a one-slice volume.

    Args:
        path: ``.nii[.gz]``, ``.mha``/``.mhd``, ``.nrrd``, a folder with one DICOM series,
            or a 2D image (PNG/TIFF/...; no geometry, default spacing 1 with a warning).
        allow_nan: keep NaN/inf voxels instead of refusing the file.

    Raises:
        BadInputError: unreadable file, several series in one folder, NaN voxels.
    """
    import SimpleITK as sitk

    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: file not found")
    suffix = volume_suffix(p)
    if p.is_file() and suffix not in VOLUME_SUFFIXES and suffix != ".dcm":
        return _read_2d_as_volume(p, allow_nan)
    try:
        if p.is_dir():
            img = _read_dicom_series(p)
        else:
            img = sitk.ReadImage(str(p))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise BadInputError(f"{p}: cannot read volume ({first})") from None
    arr = sitk.GetArrayFromImage(img)
    ncomp = img.GetNumberOfComponentsPerPixel()
    dim = img.GetDimension()
    if ncomp > 1:  # vector pixels: (..., C) → channel first
        arr = np.moveaxis(arr, -1, 0)
        if dim == 2:
            arr = arr[:, None]
    elif dim == 2:
        arr = arr[None]
    elif dim == 4:  # 4D NIfTI: first axis is channels/time
        pass
    geometry = Geometry.from_sitk(img).as_3d()  # 4D: the first three axes; 2D: one slice
    _check_finite(arr, p, allow_nan)
    if not allow_nan and suffix in (".nii", ".nii.gz"):
        _check_finite_nifti(p)
    return Volume(arr, geometry, path=str(p), has_geometry=True)


def _read_dicom_series(p: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(p))
    if not ids:
        raise BadInputError(f"{p}: folder holds no DICOM series")
    if len(ids) > 1:
        raise BadInputError(
            f"{p}: folder holds {len(ids)} DICOM series; give the folder of one series"
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(p), ids[0]))
    return reader.Execute()


def _read_2d_as_volume(p: Path, allow_nan: bool) -> Volume:
    from medlens.io.images import read_image

    arr = read_image(p, keep_depth=True)  # (H, W, C)
    warnings.warn(
        f"{p}: 2D image has no geometry; using spacing 1 mm, origin 0, identity direction",
        UserWarning,
        stacklevel=3,
    )
    arr = np.moveaxis(arr, -1, 0)[:, None]  # (C, 1, H, W)
    if arr.shape[0] == 1:
        arr = arr[0]
    _check_finite(arr, p, allow_nan)
    return Volume(arr, path=str(p), has_geometry=False)


def _check_finite_nifti(p: Path) -> None:
    """ITK's NIfTI reader turns NaN into 0 silently; look at the raw data with nibabel."""
    import nibabel as nib

    img = nib.load(str(p))
    if np.dtype(img.get_data_dtype()).kind == "f":
        _check_finite(np.asanyarray(img.dataobj), p, False)


def _check_finite(arr: np.ndarray, p: Path, allow_nan: bool) -> None:
    if allow_nan or arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        raise BadInputError(
            f"{p}: {int(bad.sum())} NaN or infinite voxels; fix the file "
            "(or read with allow_nan=True and replace them yourself)"
        )


def write_volume(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    like: Volume | Geometry | dict[str, Any] | None = None,
) -> Path:
    """Write ``array`` (``(D, H, W)`` or ``(C, D, H, W)``) with ``like``'s geometry
    (a :class:`Volume`, a :class:`~medlens.io.geometry.Geometry` or its ``to_dict()``).

    The format follows the suffix (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``; ``.mhd``
    header/raw pairs cannot be renamed atomically, so use ``.mha``). 2D suffixes
    (PNG/TIFF) go to :func:`write_mask_2d` for one-slice arrays.
    """
    import SimpleITK as sitk

    p = Path(path)
    suffix = volume_suffix(p)
    if suffix in MASK_2D_SUFFIXES:
        a = np.squeeze(np.asarray(array))
        if a.ndim != 2:
            raise ValueError(f"write_volume: {p} is a 2D format but the array has shape {np.shape(array)}")
        return write_mask_2d(p, a)
    if suffix not in (".nii.gz", ".nii", ".mha", ".nrrd"):
        raise ValueError(f"write_volume: unsupported suffix {suffix!r} for {p}; use .nii.gz, .nii, .mha or .nrrd")
    arr = np.asarray(array)
    if arr.ndim == 4:
        img = sitk.GetImageFromArray(np.moveaxis(arr, 0, -1), isVector=True)
    elif arr.ndim == 3:
        img = sitk.GetImageFromArray(arr)
    else:
        raise ValueError(f"write_volume: array must be (D,H,W) or (C,D,H,W), got shape {arr.shape}")
    if isinstance(like, Volume):
        geo: Geometry | None = like.geometry
    elif isinstance(like, Geometry):
        geo = like
    else:
        geo = Geometry.from_dict(like) if like else None
    if geo is not None:
        geo = geo.as_3d()
        img.SetSpacing(geo.spacing)
        img.SetOrigin(geo.origin)
        img.SetDirection(geo.direction)
    p.parent.mkdir(parents=True, exist_ok=True)
    # SimpleITK writes by name, so write to a temp name with the same suffix, then rename.
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=p.parent)
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, useCompression=suffix.endswith(".gz") or suffix == ".mha")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_mask_2d(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write a 2D binary/label mask as PNG or TIFF; binary masks are stored 0/255."""
    from PIL import Image

    from medlens.io.atomic import atomic_write

    p = Path(path)
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"write_mask_2d: mask must be (H, W), got shape {m.shape} for {p}")
    if m.dtype == bool or (m.size and m.max() <= 1):
        m = m.astype(np.uint8) * 255
    m = m.astype(np.uint8)
    fmt = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"write_mask_2d: unsupported suffix {p.suffix!r} for {p}")
    return atomic_write(p, lambda fh: Image.fromarray(m).save(fh, format=fmt))
