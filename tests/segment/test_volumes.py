from __future__ import annotations

import numpy as np
import pytest

from medlens.errors import BadInputError
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume, read_volume, write_mask_2d, write_volume

GEO = {"spacing": [0.5, 0.75, 2.0], "origin": [10.0, -4.0, 3.5],
       "direction": [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]}


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_roundtrip_keeps_array_and_geometry(tmp_path, suffix):
    arr = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    p = write_volume(tmp_path / f"v{suffix}", arr, like=GEO)
    v = read_volume(p)
    assert v.array.shape == (4, 5, 6)
    np.testing.assert_allclose(v.array, arr)
    np.testing.assert_allclose(v.spacing, GEO["spacing"], rtol=1e-6)
    np.testing.assert_allclose(v.origin, GEO["origin"], rtol=1e-6)
    np.testing.assert_allclose(v.direction, GEO["direction"], atol=1e-6)
    # geometry of a read volume carries over to a new file
    q = write_volume(tmp_path / f"m{suffix}", (arr > 0.5).astype(np.uint8), like=v)
    np.testing.assert_allclose(read_volume(q).spacing, GEO["spacing"], rtol=1e-6)


def test_multichannel_is_channel_first(tmp_path):
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    v = read_volume(write_volume(tmp_path / "c.nii.gz", arr, like=GEO))
    assert v.array.shape == (2, 3, 4, 5) and v.channels == 2 and v.spatial_shape == (3, 4, 5)
    np.testing.assert_array_equal(v.array, arr)


def test_dicom_series_folder(tmp_path):
    import locale

    import SimpleITK as sitk

    saved = locale.setlocale(locale.LC_ALL)  # GDCM's DICOM writer sets the process locale to "C"

    arr = (np.random.default_rng(1).random((3, 8, 8)) * 1000).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 2.5))
    folder = tmp_path / "series"
    folder.mkdir()
    for z in range(3):
        s = img[:, :, z]
        s.SetMetaData("0020|0032", f"0\\0\\{z * 2.5}")
        s.SetMetaData("0020|0013", str(z + 1))
        s.SetMetaData("0020|000e", "1.2.3.4")
        s.SetMetaData("0020|000d", "1.2.3")
        s.SetMetaData("0008|0060", "MR")
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        w.SetFileName(str(folder / f"{z}.dcm"))
        w.Execute(s)
    locale.setlocale(locale.LC_ALL, saved)  # later tests open text files with the default encoding
    v = read_volume(folder)
    assert v.spatial_shape == (3, 8, 8)
    assert v.spacing[2] == pytest.approx(2.5, rel=1e-3)


def test_2d_image_without_geometry_warns_and_defaults(tmp_path):
    p = write_mask_2d(tmp_path / "m.png", np.eye(6, dtype=bool))
    with pytest.warns(UserWarning, match="no geometry"):
        v = read_volume(p)
    assert v.array.shape == (1, 6, 6) and v.spacing == (1.0, 1.0, 1.0) and not v.has_geometry
    assert set(np.unique(v.array)) == {0, 255}


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_nan_voxels_refused_naming_file(tmp_path, suffix):
    arr = np.zeros((2, 3, 3), np.float32)
    arr[1, 1, 1] = np.nan
    p = write_volume(tmp_path / f"nan{suffix}", arr, like=GEO)
    with pytest.raises(BadInputError, match=f"nan{suffix}.*NaN"):
        read_volume(p)
    if suffix == ".mha":  # (ITK's NIfTI reader itself turns NaN into 0)
        assert np.isnan(read_volume(p, allow_nan=True).array).sum() == 1


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        read_volume(tmp_path / "none.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a volume")
    with pytest.raises(BadInputError, match="bad.nii.gz"):
        read_volume(bad)
    with pytest.raises(ValueError, match="suffix"):
        write_volume(tmp_path / "x.xyz", np.zeros((2, 2, 2)))


def test_mask_png_tif_written_0_255(tmp_path):
    from PIL import Image

    m = np.zeros((5, 7), np.uint8)
    m[1:3, 2:4] = 1
    for name in ("a.png", "a.tif"):
        p = write_mask_2d(tmp_path / name, m)
        got = np.asarray(Image.open(p))
        assert got.shape == (5, 7) and set(np.unique(got)) == {0, 255}
        assert (got > 0).sum() == 4


def test_volume_carries_one_geometry(tmp_path):
    v = Volume(np.zeros((2, 3, 4)), Geometry((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.eye(3).ravel()))
    assert v.spacing == (1.0, 2.0, 3.0) and v.geometry.array_spacing == (3.0, 2.0, 1.0)
    assert v.geometry.to_dict()["spacing"] == [1.0, 2.0, 3.0]
    assert Volume(np.zeros((2, 3, 4))).geometry == Geometry.identity(3)
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((3, 4)), Geometry.identity(2))
    # a Geometry, its dict and a Volume are all accepted as ``like``
    g = Geometry.from_dict(GEO)
    for like in (g, g.to_dict(), Volume(np.zeros((2, 3, 4)), g)):
        w = read_volume(write_volume(tmp_path / "g.nii.gz", np.zeros((2, 3, 4), np.uint8), like=like))
        np.testing.assert_allclose(w.geometry.affine, g.affine, atol=1e-5)
