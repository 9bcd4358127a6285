"""CT reading: DICOM series / MetaImage / NIfTI to HU volumes, every bad input refused with
the file named, nothing modified, one bad scan does not stop the others."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medlens.ct.scan import ScanRef, find_scans, irc_to_xyz, read_ct, read_scans, xyz_to_irc
from medlens.data.synthetic.chest_ct import make_chest_ct_like, read_truth
from medlens.errors import BadInputError
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume, write_volume

SHAPE = (10, 40, 40)


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ct_phantoms")
    return {"dicom": make_chest_ct_like(base / "dicom", n_scans=2, shape=SHAPE, fmt="dicom", seed=1),
            "luna16": make_chest_ct_like(base / "luna16", n_scans=2, shape=SHAPE, seed=1)}


@pytest.fixture()
def series(phantoms, tmp_path) -> Path:
    """A private copy of one DICOM series folder, to damage."""
    src = phantoms["dicom"] / read_truth(phantoms["dicom"])["scans"][0]["path"]
    return Path(shutil.copytree(src, tmp_path / "series"))


@pytest.fixture()
def mhd(phantoms, tmp_path) -> Path:
    scan = read_truth(phantoms["luna16"])["scans"][0]
    src = phantoms["luna16"] / scan["path"]
    for suffix in (".mhd", ".raw"):  # the header names its .raw: keep the names
        shutil.copy(src.with_suffix(suffix), tmp_path)
    return tmp_path / src.name


def _edit_dicom(files, **tags):
    import pydicom

    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(f)


def test_dicom_series_read_as_hu_sorted_by_position(phantoms):
    truth = read_truth(phantoms["dicom"])["scans"][0]
    vol = read_ct(phantoms["dicom"] / truth["path"])
    luna = read_ct(phantoms["luna16"] / read_truth(phantoms["luna16"])["scans"][0]["path"])
    assert vol.array.dtype == np.float32 and vol.array.shape == SHAPE
    # files are numbered top-down; the volume runs bottom-up like the LUNA16 file
    np.testing.assert_array_equal(vol.array, luna.array)
    assert vol.array.min() == pytest.approx(-1024)  # RescaleIntercept applied (stored values are ≥ 0)
    np.testing.assert_allclose(vol.geometry.origin, truth["origin"], atol=1e-3)
    np.testing.assert_allclose(vol.geometry.spacing, truth["spacing"], atol=1e-6)
    assert vol.meta["seriesuid"] == truth["seriesuid"] == luna.meta["seriesuid"]
    assert vol.meta["modality"] == "CT" and vol.meta["source_format"] == "dicom"
    assert luna.meta["source_format"] == "metaimage"
    assert len(vol.meta["sop_uids"]) == SHAPE[0] and Path(vol.meta["files"][0]).name == f"{SHAPE[0]:06d}.dcm"


def test_rescale_slope_and_intercept_applied(series, phantoms):
    before = read_ct(series).array
    _edit_dicom(sorted(series.glob("*.dcm")), RescaleSlope=2, RescaleIntercept=-1000)
    after = read_ct(series).array
    np.testing.assert_allclose(after, 2 * (before + 1024) - 1000)


def test_missing_slice_is_refused(series):
    files = sorted(series.glob("*.dcm"))
    files[4].unlink()
    with pytest.raises(BadInputError, match=r"missing slice.*000006\.dcm.*000004\.dcm") as e:
        read_ct(series)
    assert str(series) in str(e.value)


def test_mixed_series_is_refused(series, phantoms):
    other = phantoms["dicom"] / read_truth(phantoms["dicom"])["scans"][1]["path"]
    shutil.copy(other / "000003.dcm", series / "000099.dcm")
    with pytest.raises(BadInputError, match="mixed series.*2 DICOM series"):
        read_ct(series)


def test_non_ct_modality_is_refused(series):
    _edit_dicom([sorted(series.glob("*.dcm"))[2]], Modality="MR")
    with pytest.raises(BadInputError, match=r"000003\.dcm: modality is MR, not CT"):
        read_ct(series)


@pytest.mark.parametrize("spacing", [[0, 0], [12.0, 12.0]])
def test_absurd_dicom_pixel_spacing_is_refused(series, spacing):
    _edit_dicom(sorted(series.glob("*.dcm")), PixelSpacing=spacing)
    with pytest.raises(BadInputError, match="absurd voxel spacing"):
        read_ct(series)


def test_duplicate_slice_position_is_refused(series):
    files = sorted(series.glob("*.dcm"))
    import pydicom

    pos = pydicom.dcmread(files[3]).ImagePositionPatient
    _edit_dicom([files[4]], ImagePositionPatient=pos)
    with pytest.raises(BadInputError, match="same position"):
        read_ct(series)


def test_mhd_without_raw_and_truncated_raw(mhd):
    raw = mhd.with_suffix(".raw")
    data = raw.read_bytes()
    raw.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=rf"{re.escape(mhd.name)}: data file {re.escape(raw.name)} is truncated: 16000 bytes.*needs 32000"):
        read_ct(mhd)
    raw.unlink()
    with pytest.raises(BadInputError, match=rf"{re.escape(mhd.name)}: its data file {re.escape(raw.name)} is missing"):
        read_ct(mhd)


def test_absurd_mhd_slice_spacing_is_refused(mhd):
    text = mhd.read_text()
    mhd.write_text(re.sub(r"ElementSpacing = .*", "ElementSpacing = 0.8 0.8 35", text))
    with pytest.raises(BadInputError, match=rf"{re.escape(mhd.name)}: absurd voxel spacing 0.8 × 0.8 × 35"):
        read_ct(mhd)


def test_nifti_with_rotated_direction_and_nan(tmp_path):
    rot = np.array([[np.cos(0.4), -np.sin(0.4), 0], [np.sin(0.4), np.cos(0.4), 0], [0, 0, 1]])
    geo = Geometry((0.7, 0.9, 2.0), (-100.0, 50.0, -300.0), tuple(rot.ravel()))
    arr = np.random.default_rng(0).normal(-500, 200, (6, 20, 24)).astype(np.float32)
    p = write_volume(tmp_path / "case_01.nii.gz", arr, like=geo)
    vol = read_ct(p)
    assert vol.meta["seriesuid"] == "case_01" and vol.meta["source_format"] == "nifti"
    np.testing.assert_allclose(vol.array, arr, atol=1e-3)
    np.testing.assert_allclose(vol.geometry.direction_matrix, rot, atol=1e-5)
    arr[2, 3, 4] = np.nan
    write_volume(tmp_path / "bad.nii.gz", arr, like=geo)
    with pytest.raises(BadInputError, match=r"bad\.nii\.gz: 1 NaN"):
        read_ct(tmp_path / "bad.nii.gz")


def test_xyz_irc_round_trip_with_direction_and_anisotropic_spacing():
    """Against SimpleITK's own index → physical point mapping (an independent implementation)."""
    import SimpleITK as sitk

    rot = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, -0.6], [0.6, 0.0, 0.8]])  # a rotation, not identity
    geo = Geometry((0.6, 0.8, 2.5), (10.0, -20.0, -150.0), tuple(rot.ravel()))
    vol = Volume(np.zeros((30, 40, 50), np.float32), geo)
    img = sitk.Image(50, 40, 30, sitk.sitkFloat32)
    img.SetSpacing(geo.spacing)
    img.SetOrigin(geo.origin)
    img.SetDirection(geo.direction)
    irc = np.array([[0, 0, 0], [3.5, 7.25, 11.0], [29, 39, 49]], dtype=float)
    xyz = irc_to_xyz(vol, irc)
    for p, q in zip(irc, xyz, strict=True):
        np.testing.assert_allclose(q, img.TransformContinuousIndexToPhysicalPoint(p[::-1].tolist()), atol=1e-9)
    np.testing.assert_allclose(xyz_to_irc(vol, xyz), irc, atol=1e-9)
    np.testing.assert_allclose(xyz_to_irc(geo, xyz[1]), irc[1], atol=1e-9)


def test_find_and_read_scans_one_bad_scan_does_not_stop_the_others(phantoms, tmp_path):
    root = tmp_path / "mixed"
    shutil.copytree(phantoms["luna16"] / "subset0", root / "subset0")
    dic = read_truth(phantoms["dicom"])["scans"]
    shutil.copytree(phantoms["dicom"] / dic[0]["path"], root / "dicom" / "good")
    shutil.copytree(phantoms["dicom"] / dic[1]["path"], root / "dicom" / "gappy")
    (root / "dicom" / "gappy" / "000005.dcm").unlink()
    write_volume(root / "nifti" / "n1.nii.gz", np.full((4, 8, 8), -900, np.float32),
                 like=Geometry((0.7, 0.7, 2.5)))
    (root / "subset0" / "notes.txt").write_text("not a scan")
    before = _tree_hash(root)
    refs = find_scans(root)
    assert all(isinstance(r, ScanRef) for r in refs)
    assert {r.path.name for r in refs} >= {"good", "gappy", "n1.nii.gz"} and len(refs) == 5
    assert {r.seriesuid for r in refs if r.path.parent.name == "dicom"} == {dic[0]["seriesuid"], dic[1]["seriesuid"]}
    results = dict((r.path.name, out) for r, out in read_scans(refs))
    assert isinstance(results["gappy"], BadInputError) and "missing slice" in str(results["gappy"])
    assert sum(isinstance(v, Volume) for v in results.values()) == 4
    assert _tree_hash(root) == before  # reading, and failing, modified nothing


def test_linked_series_folders_are_found_once_and_a_link_loop_ends(phantoms, tmp_path):
    """A patient folder whose series are symbolic links (data on another drive) is searched like
    any other; a link back up the tree does not loop."""
    dic = read_truth(phantoms["dicom"])["scans"]
    root = tmp_path / "patient"
    (root / "study").mkdir(parents=True)
    (root / "study" / "series").symlink_to((phantoms["dicom"] / dic[0]["path"]).resolve(), target_is_directory=True)
    (root / "study" / "again").symlink_to(root.resolve(), target_is_directory=True)  # a loop
    refs = find_scans(root)
    assert [r.seriesuid for r in refs] == [dic[0]["seriesuid"]]


def test_inputs_never_modified_by_failed_reads(mhd, series):
    (series / "000002.dcm").unlink()
    mhd.with_suffix(".raw").write_bytes(b"\0" * 10)
    before = _tree_hash(mhd.parent)
    for p in (series, mhd, mhd.parent / "nope.mhd"):
        with pytest.raises(BadInputError):
            read_ct(p)
    assert _tree_hash(mhd.parent) == before


@pytest.mark.realdata
def test_real_lidc_series(shared_data):
    """LIDC-IDRI-0001: 133 slices of 512×512, 0.703 mm pixels, 2.5 mm slices, sane HU, and
    slices where their ImagePositionPatient puts them (checked against pydicom directly)."""
    import pydicom

    folders = [p for p in sorted((shared_data / "lidc_lung_ct").glob("LIDC-IDRI-0001/*/*")) if p.is_dir()]
    if not folders:
        pytest.skip("LIDC-IDRI-0001 not in the shared data")
    before = _tree_hash(folders[0])
    vol = read_ct(folders[0])
    assert vol.array.shape == (133, 512, 512)
    np.testing.assert_allclose(vol.geometry.spacing, (0.703125, 0.703125, 2.5), atol=1e-6)
    assert vol.meta["seriesuid"] == folders[0].name == "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
    a = vol.array
    assert -3100 <= a.min() and a.max() <= 4100
    sub = a[::4, ::8, ::8]
    body = sub[sub > -2000]  # -2048 pads outside the scanner's circular field of view
    assert np.percentile(body, 5) < -900 and (body > 200).mean() > 0.001  # air/lung and bone
    assert ((body > -100) & (body < 100)).mean() > 0.15  # soft tissue
    heads = {f: pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folders[0].glob("*.dcm"))}
    for k in (0, 66, 132):
        z = vol.geometry.index_to_world([k, 0, 0])[2]
        f = next(f for f, h in heads.items() if abs(float(h.ImagePositionPatient[2]) - z) < 1e-3)
        ds = pydicom.dcmread(f)
        np.testing.assert_array_equal(a[k], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert _tree_hash(folders[0]) == before
