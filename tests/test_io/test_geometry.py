"""One axis convention: array index (I, R, C) ↔ LPS mm (x, y, z), checked against SimpleITK,
nibabel and the headers of a real DICOM CT series."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from medlens.io.geometry import Geometry
from medlens.io.volumes import read_volume, write_volume

SPACING = (0.7, 1.3, 3.1)  # x, y, z: anisotropic
ORIGIN = (-120.5, 33.0, 7.25)


def _rotation() -> np.ndarray:
    """A proper rotation with no zero entries (every axis mixes with every other)."""
    sitk_t = sitk.Euler3DTransform()
    sitk_t.SetRotation(0.3, -0.5, 1.1)
    return np.asarray(sitk_t.GetMatrix()).reshape(3, 3)


def _image(ndim: int = 3) -> sitk.Image:
    if ndim == 3:
        img = sitk.Image([9, 7, 5], sitk.sitkInt16)  # ITK size (C, R, I)
        img.SetSpacing(SPACING)
        img.SetOrigin(ORIGIN)
        img.SetDirection(tuple(_rotation().ravel()))
    else:
        img = sitk.Image([9, 7], sitk.sitkInt16)
        a = 0.4
        img.SetSpacing(SPACING[:2])
        img.SetOrigin(ORIGIN[:2])
        img.SetDirection((np.cos(a), -np.sin(a), np.sin(a), np.cos(a)))
    return img


@pytest.mark.parametrize("ndim", [2, 3])
def test_agrees_with_simpleitk_on_rotated_anisotropic_grid(ndim):
    img = _image(ndim)
    g = Geometry.from_sitk(img)
    assert g.ndim == ndim and not np.allclose(g.direction_matrix, np.eye(ndim))
    rng = np.random.default_rng(0)
    irc = rng.uniform(-2, 9, size=(20, ndim))  # continuous, also outside the grid
    world = g.index_to_world(irc)
    for idx, xyz in zip(irc, world):
        itk_index = tuple(float(v) for v in idx[::-1])  # ITK's index order is (c, r, i)
        np.testing.assert_allclose(xyz, img.TransformContinuousIndexToPhysicalPoint(itk_index), atol=1e-6)
        back = img.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in xyz))
        np.testing.assert_allclose(np.asarray(back)[::-1], idx, atol=1e-6)
    np.testing.assert_allclose(g.world_to_index(world), irc, atol=1e-6)  # round trip
    # the affine is the same map on homogeneous array indices
    homo = np.concatenate([irc, np.ones((len(irc), 1))], axis=1)
    np.testing.assert_allclose((homo @ g.affine.T)[:, :ndim], world, atol=1e-9)
    assert g.array_spacing == tuple(reversed(img.GetSpacing()))


def test_array_axes_are_slice_row_column():
    """The voxel a numpy index names is the voxel SimpleITK puts at that world point."""
    arr = np.zeros((5, 7, 9), np.int16)
    arr[3, 1, 6] = 42
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(_image(3))
    g = Geometry.from_sitk(img)
    xyz = g.index_to_world([3, 1, 6])
    assert img[img.TransformPhysicalPointToIndex(tuple(xyz))] == 42
    np.testing.assert_allclose(g.world_to_index(xyz), [3, 1, 6], atol=1e-9)


def test_frozen_json_roundtrip_and_checks():
    g = Geometry.from_sitk(_image(3))
    text = json.dumps(g.to_dict())
    assert Geometry.from_dict(json.loads(text)) == g
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.spacing = (1.0, 1.0, 1.0)  # type: ignore[misc]
    with pytest.raises(ValueError, match="positive"):
        Geometry((1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="direction"):
        Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="singular"):
        Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        g.world_to_index([1.0, 2.0])
    with pytest.raises(ValueError, match="spacing, origin and direction"):
        Geometry.from_dict({"spacing": [1, 1, 1]})


def test_nibabel_ras_is_lps_with_x_and_y_negated(tmp_path):
    import nibabel as nib

    arr = np.arange(5 * 7 * 9, dtype=np.int16).reshape(5, 7, 9)
    g = Geometry.from_sitk(_image(3))
    path = write_volume(tmp_path / "rot.nii.gz", arr, like=g)
    nimg = nib.load(str(path))
    from_nib = Geometry.from_nibabel(nimg)
    np.testing.assert_allclose(from_nib.spacing, g.spacing, atol=1e-5)
    np.testing.assert_allclose(from_nib.origin, g.origin, atol=1e-4)
    np.testing.assert_allclose(from_nib.direction, g.direction, atol=1e-5)
    np.testing.assert_allclose(g.ras_affine, nimg.affine, atol=1e-4)
    # nibabel's array is the transpose of medlens' (I, R, C) array
    data = np.asarray(nimg.dataobj)
    np.testing.assert_array_equal(data.T, read_volume(path).array)
    # a voxel's RAS position (nibabel) is its LPS position (medlens) with x and y negated
    i, r, c = 3, 1, 6
    ras = nib.affines.apply_affine(nimg.affine, [c, r, i])
    lps = g.index_to_world([i, r, c])
    np.testing.assert_allclose(ras, lps * np.array([-1.0, -1.0, 1.0]), atol=1e-4)
    assert abs(lps[0]) > 1 and abs(lps[1]) > 1  # the flip is visible, not hidden by zeros


def test_resampled_keeps_the_grid_edges():
    g = Geometry.from_sitk(_image(3))
    old, new = (5, 7, 9), (5, 14, 3)
    h = g.resampled(old, new)
    np.testing.assert_allclose(h.array_spacing, (3.1, 1.3 * 7 / 14, 0.7 * 9 / 3))
    # the outer corner of the first voxel (index -0.5) stays where it was, and so does the last
    np.testing.assert_allclose(h.index_to_world([-0.5, -0.5, -0.5]), g.index_to_world([-0.5, -0.5, -0.5]),
                               atol=1e-9)
    np.testing.assert_allclose(h.index_to_world(np.asarray(new) - 0.5), g.index_to_world(np.asarray(old) - 0.5),
                               atol=1e-9)
    two = Geometry.identity(2).as_3d(2.5)
    assert two.ndim == 3 and two.spacing == (1.0, 1.0, 2.5)


@pytest.mark.realdata
def test_real_lidc_ct_series_headers(shared_data):
    """The real LIDC-IDRI-0001 CT series: the geometry medlens reads is the one its DICOM
    headers state (ImagePositionPatient, PixelSpacing, ImageOrientationPatient)."""
    import pydicom

    series = sorted((shared_data / "lidc_lung_ct").glob("LIDC-IDRI-*/*/*/"))
    series = [s for s in series if any(s.glob("*.dcm"))]
    if not series:
        pytest.skip("no LIDC DICOM series in the shared data")
    folder = series[0]
    vol = read_volume(folder)
    g = vol.geometry
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dcm"))]
    heads = [h for h in heads if "ImagePositionPatient" in h]
    row_dir, col_dir = np.asarray(heads[0].ImageOrientationPatient, float).reshape(2, 3)
    normal = np.cross(row_dir, col_dir)
    heads.sort(key=lambda h: float(np.dot(normal, np.asarray(h.ImagePositionPatient, float))))
    assert vol.spatial_shape[0] == len(heads)
    assert vol.spatial_shape[1:] == (int(heads[0].Rows), int(heads[0].Columns))
    # PixelSpacing is (between rows, between columns): x is the column step
    np.testing.assert_allclose(g.spacing[:2], [float(heads[0].PixelSpacing[1]), float(heads[0].PixelSpacing[0])],
                               rtol=1e-6)
    np.testing.assert_allclose(g.direction_matrix[:, 0], row_dir, atol=1e-6)
    np.testing.assert_allclose(g.direction_matrix[:, 1], col_dir, atol=1e-6)
    np.testing.assert_allclose(g.origin, np.asarray(heads[0].ImagePositionPatient, float), atol=1e-4)
    # every slice's position maps to voxel (k, 0, 0), and back
    for k in (0, len(heads) // 2, len(heads) - 1):
        pos = np.asarray(heads[k].ImagePositionPatient, float)
        np.testing.assert_allclose(g.world_to_index(pos), [k, 0, 0], atol=1e-3)
        np.testing.assert_allclose(g.index_to_world([k, 0, 0]), pos, atol=1e-3)
    # the far corner voxel (last row, last column) of a middle slice too
    k, r, c = len(heads) // 2, int(heads[0].Rows) - 1, int(heads[0].Columns) - 1
    corner = np.asarray(heads[k].ImagePositionPatient, float) + c * g.spacing[0] * row_dir + r * g.spacing[1] * col_dir
    np.testing.assert_allclose(g.index_to_world([k, r, c]), corner, atol=1e-3)
