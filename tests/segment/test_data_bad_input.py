from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from medlens.errors import BadInputError
from medlens.segment.data import (
    binarise_mask,
    build_slices,
    patient_folds,
    sampling_weights,
    split_patients,
)
from medlens.segment.layouts import load_segmentation_dataset
from tests.segment.conftest import tree_hash


def test_build_slices_kaggle(kaggle_set, tmp_path):
    ix = load_segmentation_dataset(kaggle_set)
    s = build_slices(ix, size=32, cache_dir=tmp_path / "cache")
    assert s.images.shape == (24, 3, 32, 32) and s.images.dtype == np.uint8
    assert s.masks.shape == (24, 1, 32, 32) and set(np.unique(s.masks)) <= {0, 1}
    assert s.positive.any() and (~s.positive).any()
    # second call reads the cache only
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    s2 = build_slices(ix, size=32, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(s.images, s2.images)
    assert list(s2.patients) == list(s.patients)


def test_resize_keeps_masks_binary(kaggle_set):
    s = build_slices(load_segmentation_dataset(kaggle_set), size=20)
    assert s.images.shape[-2:] == (20, 20) and set(np.unique(s.masks)) <= {0, 1}


def test_volumes_cut_into_slices_with_spacing(nifti_set):
    s = build_slices(load_segmentation_dataset(nifti_set))
    assert s.images.shape == (15, 3, 32, 32)
    pid = s.patients[0]
    assert s.spacing[pid] == pytest.approx((3.0, 1.0, 1.0))  # (z, y, x)
    assert list(s.slice_index[:5]) == [0, 1, 2, 3, 4]


def test_mask_binarisation_rule():
    m, w = binarise_mask(np.array([[0, 255], [255, 0]], np.uint8), "m.png")
    assert w is None and m.tolist() == [[0, 1], [1, 0]]
    m, w = binarise_mask(np.array([[0, 1], [2, 0]], np.uint8), "lab.png")
    assert w is not None and "label map" in w.reason and m.tolist() == [[0, 1], [1, 0]]
    m, w = binarise_mask(np.array([[0, 3], [250, 128]], np.uint8), "jpeg.png")
    assert w.severity == "warning" and "half the maximum" in w.reason and m.tolist() == [[0, 0], [1, 1]]
    with pytest.raises(BadInputError, match="nan.tif"):
        binarise_mask(np.array([np.nan, 1.0]), "nan.tif")


@pytest.fixture()
def broken_set(kaggle_set, tmp_path):
    """A copy of the synthetic set with one bad file of each kind."""
    root = tmp_path / "broken"
    shutil.copytree(kaggle_set, root)
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    c0, c1 = cases[0], cases[1]
    # mask with odd values
    m = np.asarray(Image.open(c0 / f"{c0.name}_1_mask.tif")).copy()
    m[0, :4] = 7
    Image.fromarray(m).save(c0 / f"{c0.name}_1_mask.tif")
    # 3D (multi-frame TIFF) where a 2D slice is expected
    frames = [Image.fromarray(np.zeros((32, 32, 3), np.uint8)) for _ in range(3)]
    frames[0].save(c0 / f"{c0.name}_2.tif", save_all=True, append_images=frames[1:])
    # NaN pixels in a float image
    Image.fromarray(np.full((32, 32), np.nan, np.float32)).save(c1 / f"{c1.name}_1.tif")
    # missing mask
    (c1 / f"{c1.name}_2_mask.tif").unlink()
    # mask of another size
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(c1 / f"{c1.name}_3_mask.tif")
    return root


def test_bad_inputs_reported_rest_goes_on_inputs_unmodified(broken_set):
    before = tree_hash(broken_set)
    ix = load_segmentation_dataset(broken_set)
    s = build_slices(ix, size=32)
    assert tree_hash(broken_set) == before
    probs = {p.path.rsplit("/", 1)[1]: p for p in s.problems}
    c0, c1 = sorted(p.name for p in broken_set.iterdir() if p.is_dir())[:2]
    assert "not {0,1} or {0,255}" in probs[f"{c0}_1_mask.tif"].reason
    assert probs[f"{c0}_1_mask.tif"].severity == "warning"
    assert "3D volume" in probs[f"{c0}_2.tif"].reason
    assert "NaN" in probs[f"{c1}_1.tif"].reason
    assert "missing mask" in probs[f"{c1}_2.tif"].reason
    assert "16×16" in probs[f"{c1}_3_mask.tif"].reason
    assert len(s) == 24 - 4  # the warned mask is kept (binarised), four slices left out


def test_split_patients_grouped_and_deterministic():
    pats = [f"p{i}" for i in range(10) for _ in range(3)]
    a = split_patients(pats, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert a == split_patients(pats, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert len(a["test"]) == 2 and len(a["val"]) == 2 and len(a["train"]) == 6
    assert not set(a["test"]) & set(a["train"]) and not set(a["val"]) & set(a["train"])
    folds = patient_folds(pats, 3)
    assert sorted(p for f in folds for p in f) == sorted(set(pats))
    with pytest.raises(BadInputError):
        split_patients(["a", "b"], val_fraction=0.5, test_fraction=0.5)


def test_sampling_weights_give_requested_share():
    pos = np.array([True] + [False] * 9)
    w = sampling_weights(pos, 0.5)
    assert w[pos].sum() == pytest.approx(0.5) and w.sum() == pytest.approx(1.0)
    assert sampling_weights(pos, None) is None
    with pytest.raises(ValueError):
        sampling_weights(pos, 1.5)


def test_resized_volume_spacing_scales(nifti_set):
    s = build_slices(load_segmentation_dataset(nifti_set), size=16)
    assert s.spacing[s.patients[0]] == pytest.approx((3.0, 2.0, 2.0))
