"""Writers of the chest-CT phantoms: LUNA16 ``.mhd``/``.raw`` or DICOM series, the
``annotations.csv``/``candidates.csv`` tables and ``truth.json`` (layouts in
:mod:`medlens.data.synthetic.chest_ct`).

Why apart from the anatomy: what a scan looks like and how it is stored on disk change for
different reasons; the same seed still writes byte-identical files.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.synthetic.chest_ct_anatomy import ChestCTPhantom, chest_ct_phantom
from medlens.options import look_up_option

FORMATS = ("luna16", "dicom")
#: UID root of the pydicom organisation (deterministic UIDs via entropy sources).
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def _uid(*parts: Any) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=["medlens-chest-ct", *map(str, parts)]))


def make_chest_ct_like(
    root: str | Path,
    *,
    n_scans: int = 4,
    shape: tuple[int, int, int] = (40, 96, 96),
    spacing_xyz: tuple[float, float, float] = (0.8, 0.8, 2.5),
    seed: int = 0,
    fmt: str = "luna16",
    nodules_per_scan: tuple[int, int] = (1, 3),
    noise_hu: float = 20.0,
    vary_spacing: bool = False,
) -> Path:
    """Write ``n_scans`` chest-CT phantoms under ``root`` in the LUNA16 or DICOM layout.

    Args:
        root: an empty or new folder.
        n_scans: number of scans (patients).
        shape: ``(D, H, W)`` voxels per scan.
        spacing_xyz: voxel size in mm (column, row, slice).
        seed: the same seed writes byte-identical files.
        fmt: ``"luna16"`` or ``"dicom"`` (see the module docstring).
        nodules_per_scan: inclusive range of the number of nodules per scan.
        noise_hu: Gaussian noise (HU standard deviation).
        vary_spacing: draw each scan's spacing as scanners vary it (pixels 0.6–0.9 mm, slices
            1–2.5 mm) instead of ``spacing_xyz``: a model trained on them sees nodules at many
            voxel sizes.

    Returns:
        ``root``. The truth is in ``root/truth.json`` (see :func:`read_truth`).
    """
    from medlens.io.atomic import atomic_write_json, atomic_write_text

    fmt = look_up_option(fmt, FORMATS, what="synthetic chest CT format")
    if n_scans < 1:
        raise ValueError(f"make_chest_ct_like: n_scans must be >= 1, got {n_scans}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scans: list[dict[str, Any]] = []
    ann_rows: list[list[Any]] = []
    cand_rows: list[list[Any]] = []
    for k in range(n_scans):
        series_uid = _uid(seed, k, "series")
        if vary_spacing:
            pixel = round(float(rng.uniform(0.6, 0.9)), 4)
            spacing_xyz = (pixel, pixel, float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5])))
        ph = chest_ct_phantom(rng, shape=shape, spacing_xyz=spacing_xyz,
                              nodules_per_scan=nodules_per_scan, noise_hu=noise_hu, seriesuid=series_uid)
        entry: dict[str, Any] = {"seriesuid": series_uid, "shape": list(ph.hu.shape),
                                 "spacing": list(ph.geometry.spacing), "origin": list(ph.geometry.origin),
                                 "direction": list(ph.geometry.direction),
                                 "nodules": [asdict(n) for n in ph.nodules]}
        if fmt == "luna16":
            entry["path"] = f"subset0/{series_uid}.mhd"
            _write_mhd(root / "subset0", series_uid, ph)
        else:
            patient = f"SYNCT-{k:04d}"
            study_uid = _uid(seed, k, "study")
            rel = Path(patient) / study_uid / series_uid
            entry.update(path=str(rel), patient_id=patient, study_uid=study_uid)
            _write_dicom_series(root / rel, ph, patient_id=patient, study_uid=study_uid, seed=seed, k=k)
        scans.append(entry)
        for n in ph.nodules:
            ann_rows.append([series_uid, *n.center_xyz, n.diameter_mm, n.malignancy])
        for x, y, z, cls in ph.candidates:
            cand_rows.append([series_uid, x, y, z, cls])
    atomic_write_text(root / "annotations.csv",
                      _csv(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "malignancy"], ann_rows))
    atomic_write_text(root / "candidates.csv", _csv(["seriesuid", "coordX", "coordY", "coordZ", "class"], cand_rows))
    atomic_write_json(root / "truth.json", {"format": fmt, "seed": seed, "scans": scans})
    return root


def read_truth(root: str | Path) -> dict[str, Any]:
    """The ``truth.json`` that :func:`make_chest_ct_like` wrote under ``root``."""
    import json

    return json.loads((Path(root) / "truth.json").read_text(encoding="utf-8"))


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(header)
    wr.writerows(rows)
    return buf.getvalue()


def _write_mhd(folder: Path, stem: str, ph: ChestCTPhantom) -> None:
    """``<stem>.mhd`` + ``<stem>.raw`` written in a temporary folder and renamed in (raw first)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(ph.hu)
    img.SetSpacing(ph.geometry.spacing)
    img.SetOrigin(ph.geometry.origin)
    img.SetDirection(ph.geometry.direction)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=folder))
    try:
        sitk.WriteImage(img, str(tmp / f"{stem}.mhd"), useCompression=False)
        for suffix in (".raw", ".mhd"):
            (tmp / f"{stem}{suffix}").replace(folder / f"{stem}{suffix}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_dicom_series(folder: Path, ph: ChestCTPhantom, *, patient_id: str, study_uid: str,
                        seed: int, k: int) -> None:
    """One CT Image Storage file per slice, numbered from the top of the chest down."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    from medlens.io.atomic import atomic_write

    d, h, w = ph.hu.shape
    sx, sy, sz = ph.geometry.spacing
    ox, oy, oz = ph.geometry.origin
    frame_uid = _uid(seed, k, "frame")
    for n, i in enumerate(range(d - 1, -1, -1), start=1):
        sop_uid = _uid(seed, k, "sop", i)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = ph.seriesuid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.PatientName = f"Phantom^{patient_id}"
        ds.StudyDate = "20260101"
        ds.Modality = "CT"
        ds.Manufacturer = "medlens synthetic phantom"
        ds.SeriesNumber = 1
        ds.InstanceNumber = n
        z = oz + i * sz
        ds.ImagePositionPatient = [f"{ox:.4f}", f"{oy:.4f}", f"{z:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z:.4f}"
        ds.PixelSpacing = [f"{sy:.6g}", f"{sx:.6g}"]  # row spacing (y), column spacing (x)
        ds.SliceThickness = f"{sz:.6g}"
        ds.Rows, ds.Columns = h, w
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.PixelData = (ph.hu[i].astype(np.int32) + 1024).astype("<u2").tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        atomic_write(folder / f"{n:06d}.dcm", lambda fh, data=data: fh.write(data))
