"""Single-frame DICOM images are read as images; truncated or multi-frame ones get a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medlens.io import ImageReadError, read_image


def _write_dicom(path, arr: np.ndarray, *, photometric="MONOCHROME2", slope=1.0, intercept=0.0, frames=1):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_reads_monochrome2_as_grey_uint8(tmp_path):
    arr = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (30, 1))
    img = read_image(_write_dicom(tmp_path / "x.dcm", arr))
    assert img.shape == (30, 40, 1) and img.dtype == np.uint8
    assert img[0, 0, 0] == 0 and img[0, -1, 0] == 255 and np.all(np.diff(img[0, :, 0].astype(int)) >= 0)


def test_monochrome1_is_inverted(tmp_path):
    arr = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (30, 1))
    img = read_image(_write_dicom(tmp_path / "x.dcm", arr, photometric="MONOCHROME1"))
    assert img[0, 0, 0] == 255 and img[0, -1, 0] == 0


def test_dicom_without_extension_is_detected_by_magic(tmp_path):
    arr = np.full((8, 8), 7, np.uint16)
    p = _write_dicom(tmp_path / "IM0001", arr)
    assert read_image(p).shape == (8, 8, 1)


def test_truncated_dicom_names_the_file(tmp_path):
    p = _write_dicom(tmp_path / "t.dcm", np.ones((64, 64), np.uint16))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 3000])
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert "t.dcm" in str(e.value) and "DICOM" in e.value.reason


def test_multiframe_dicom_is_refused(tmp_path):
    p = _write_dicom(tmp_path / "m.dcm", np.ones((3, 8, 8), np.uint16), frames=3)
    with pytest.raises(ImageReadError, match="multi-frame"):
        read_image(p)
