"""Chest-CT phantoms: HU anatomy, nodules in mm, truth that matches the files, both layouts."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medlens.data.synthetic import GENERATORS, make_dataset
from medlens.data.synthetic.chest_ct import chest_ct_phantom, make_chest_ct_like, read_truth
from medlens.errors import ConfigError


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_phantom_anatomy_in_hu():
    """Air, lungs, soft tissue, bone and vessels have their HU; nodules have theirs by kind."""
    ph = chest_ct_phantom(3, n_nodules=4, noise_hu=0.0)
    hu, lung, lab = ph.hu.astype(float), ph.lung_mask, ph.nodule_labels
    assert ph.hu.dtype == np.int16 and ph.hu.shape == (40, 96, 96)
    assert hu[:, 0, 0].max() <= -990  # corner: air
    lung_only = lung & (lab == 0)
    assert -900 < np.median(hu[lung_only]) < -800
    assert hu.max() >= 500  # vertebra / ribs
    # vessels: bright tubes inside the lung, away from the nodules (the false-positive source)
    assert ((hu > -300) & lung_only).mean() > 0.002
    assert ((hu < -990) & lung).any()  # airway lumen runs into the lungs
    assert len(ph.nodules) >= 3
    for k, n in enumerate(ph.nodules, start=1):
        assert 3.0 <= n.diameter_mm <= 30.0
        inside = hu[lab == k]
        assert inside.size > 0
        if n.kind == "solid":
            assert np.median(inside) > -150
        elif n.kind == "ground_glass":
            assert -750 < np.median(inside) < -200
        # the label sits at the recorded centre (voxel index from mm via the geometry)
        irc = ph.geometry.world_to_index(n.center_xyz)
        np.testing.assert_allclose(irc, n.center_irc, atol=1e-3)
        com = np.asarray(ndimage.center_of_mass(lab == k))
        assert np.abs(com - irc).max() < 1.5 + 0.5 * n.diameter_mm / np.asarray(ph.geometry.array_spacing).min()


def test_hilar_trunks_are_thicker_than_any_vessel_inside_the_lung():
    """Each lung has a thick vessel from the mediastinum at its hilum (the real false-positive
    source a phantom-trained ranker must have seen): bright lung voxels ≥ 3.5 mm from any dark
    or non-lung voxel exist (a nodule-free phantom, so nothing else is that thick), on both sides."""
    ph = chest_ct_phantom(5, shape=(40, 128, 128), spacing_xyz=(0.75, 0.75, 1.5), n_nodules=0, noise_hu=0.0)
    sx, sy, sz = ph.geometry.spacing
    bright = (ph.hu > -300) & ph.lung_mask
    depth = ndimage.distance_transform_edt(bright, sampling=(sz, sy, sx))
    thick = depth >= 3.5
    assert thick.any()
    cols = np.nonzero(thick)[2]
    w = ph.hu.shape[2]
    assert (cols < w // 2).any() and (cols >= w // 2).any()  # both lungs
    # and they sit medially, at the hilum: nearer the midline than the lung's centre
    lung_cols = np.nonzero(ph.lung_mask)[2]
    left_centre = lung_cols[lung_cols < w // 2].mean()
    right_centre = lung_cols[lung_cols >= w // 2].mean()
    assert cols[cols < w // 2].mean() > left_centre and cols[cols >= w // 2].mean() < right_centre


def test_the_diaphragm_domes_up_into_each_lung_base():
    """In the lowest lung slices the lung is a ring around the dome (bright tissue under the
    lung's centre, lung on either side of it), as on a real chest CT's lowest slices."""
    ph = chest_ct_phantom(5, shape=(40, 128, 128), spacing_xyz=(0.75, 0.75, 1.5), n_nodules=0, noise_hu=0.0)
    lung = ph.lung_mask
    zs = np.nonzero(lung.any(axis=(1, 2)))[0]
    mid, low = lung[lung.shape[0] // 2], lung[zs[0] + 2]
    w = lung.shape[2]
    for half in (slice(0, w // 2), slice(w // 2, w)):
        rows, cols = np.nonzero(mid[:, half])
        r0, c0 = int(rows.mean()), int(cols.mean())
        assert not low[:, half][r0, c0] and ph.hu[zs[0] + 2][:, half][r0, c0] > -200  # the dome
        assert low[:, half][r0, :c0].any() and low[:, half][r0, c0:].any()  # lung on both sides


def test_nodule_size_is_in_mm_with_anisotropic_spacing():
    """A nodule spans diameter / spacing voxels along each axis: fewer slices than columns."""
    ph = chest_ct_phantom(5, n_nodules=1, noise_hu=0.0, shape=(40, 96, 96), spacing_xyz=(0.6, 0.6, 2.5))
    n = ph.nodules[0]
    ii, _rr, cc = np.nonzero(ph.nodule_labels == 1)
    extent_slices, extent_cols = ii.max() - ii.min() + 1, cc.max() - cc.min() + 1
    assert extent_cols > extent_slices or n.diameter_mm < 4
    vol_mm3 = (ph.nodule_labels == 1).sum() * ph.geometry.voxel_volume
    if not n.juxta_pleural:  # cut by the wall otherwise
        assert vol_mm3 == pytest.approx(np.pi / 6 * n.diameter_mm ** 3, rel=0.45)


def test_juxta_pleural_nodules_touch_the_wall_others_do_not():
    seen = set()
    for seed in range(6):
        ph = chest_ct_phantom(seed, n_nodules=3, noise_hu=0.0)
        for k, n in enumerate(ph.nodules, start=1):
            m = ph.nodule_labels == k
            touches = (ndimage.binary_dilation(m, iterations=1) & ~ph.lung_mask).any()
            assert touches == n.juxta_pleural, (seed, k, n)
            seen.add(n.juxta_pleural)
    assert seen == {True, False}


def test_luna16_layout_matches_truth(tmp_path):
    import SimpleITK as sitk

    root = make_chest_ct_like(tmp_path / "luna", n_scans=2)
    truth = read_truth(root)
    assert truth["format"] == "luna16" and len(truth["scans"]) == 2
    ann, cand = _rows(root / "annotations.csv"), _rows(root / "candidates.csv")
    assert list(ann[0]) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "malignancy"]
    assert list(cand[0]) == ["seriesuid", "coordX", "coordY", "coordZ", "class"]
    for scan in truth["scans"]:
        uid = scan["seriesuid"]
        mhd = root / scan["path"]
        assert mhd.parent.name == "subset0" and mhd.stem == uid and mhd.with_suffix(".raw").is_file()
        img = sitk.ReadImage(str(mhd))
        arr = sitk.GetArrayFromImage(img)
        assert arr.dtype == np.int16 and list(arr.shape) == scan["shape"] == [40, 96, 96]
        np.testing.assert_allclose(img.GetSpacing(), (0.8, 0.8, 2.5))
        np.testing.assert_allclose(img.GetOrigin(), scan["origin"])
        rows = [r for r in ann if r["seriesuid"] == uid]
        assert len(rows) == len(scan["nodules"]) >= 1
        for r, n in zip(rows, scan["nodules"], strict=True):
            xyz = [float(r[k]) for k in ("coordX", "coordY", "coordZ")]
            np.testing.assert_allclose(xyz, n["center_xyz"], atol=1e-3)
            assert float(r["malignancy"]) == float(np.median(n["ratings"]))
            assert n["malignant"] == (sum(v >= 4 for v in n["ratings"]) >= 2) == (n["malignancy"] >= 4)
            idx = img.TransformPhysicalPointToIndex(xyz)  # (c, r, i)
            if n["kind"] == "solid" and n["diameter_mm"] >= 5:
                assert arr[idx[2], idx[1], idx[0]] > -250
        crow = [r for r in cand if r["seriesuid"] == uid]
        assert sum(r["class"] == "1" for r in crow) == len(scan["nodules"])
        assert 10 <= sum(r["class"] == "0" for r in crow) <= 20


def test_same_seed_same_bytes_and_registered(tmp_path):
    a = make_chest_ct_like(tmp_path / "a", n_scans=1, seed=7)
    b = make_dataset("chest_ct", tmp_path / "b", n_scans=1, seed=7)
    c = make_chest_ct_like(tmp_path / "c", n_scans=1, seed=8)
    assert GENERATORS["chest_ct"] is make_chest_ct_like
    assert _tree_hash(a) == _tree_hash(b)
    assert _tree_hash(a) != _tree_hash(c)


def test_dicom_layout_same_scan_as_luna16(tmp_path):
    """The DICOM series holds the same HU volume as the LUNA16 file of the same seed;
    files are numbered from the top down, rescale maps stored values to HU."""
    import pydicom

    from medlens.ct.scan import read_ct

    luna = make_chest_ct_like(tmp_path / "l", n_scans=1, seed=2, shape=(12, 48, 48))
    dic = make_chest_ct_like(tmp_path / "d", n_scans=1, seed=2, shape=(12, 48, 48), fmt="dicom")
    tl, td = read_truth(luna)["scans"][0], read_truth(dic)["scans"][0]
    assert tl["seriesuid"] == td["seriesuid"] and tl["nodules"] == td["nodules"]
    folder = dic / td["path"]
    assert folder.relative_to(dic).parts[0] == td["patient_id"]
    files = sorted(folder.glob("*.dcm"))
    assert [f.name for f in files[:2]] == ["000001.dcm", "000002.dcm"] and len(files) == 12
    first, last = pydicom.dcmread(files[0]), pydicom.dcmread(files[-1])
    assert first.Modality == "CT" and first.SeriesInstanceUID == td["seriesuid"]
    assert float(first.ImagePositionPatient[2]) > float(last.ImagePositionPatient[2])
    assert float(first.RescaleIntercept) == -1024 and first.pixel_array.min() >= 0
    a, b = read_ct(luna / tl["path"]), read_ct(folder)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.geometry.origin, b.geometry.origin, atol=1e-3)
    np.testing.assert_allclose(a.geometry.spacing, b.geometry.spacing, atol=1e-6)
    assert (dic / "annotations.csv").read_text() == (luna / "annotations.csv").read_text()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="luna16"):
        make_chest_ct_like("/nonexistent-never-written", fmt="lunna16")
    with pytest.raises(ValueError, match="shape"):
        chest_ct_phantom(0, shape=(4, 16, 16))
    with pytest.raises(ValueError, match="nodules_per_scan"):
        chest_ct_phantom(0, nodules_per_scan=(3, 1))
