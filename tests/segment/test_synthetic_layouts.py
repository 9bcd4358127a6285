from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from medlens.data.synthetic.brain import brain_volume, make_brain_mri_like
from medlens.errors import BadInputError, ConfigError
from medlens.segment.layouts import detect_segmentation_layout, load_segmentation_dataset


def test_brain_volume_shapes_and_lesion_is_flair_bright():
    img, mask = brain_volume(np.random.default_rng(0), slices=6, size=48, difficulty=0.0)
    assert img.shape == (3, 6, 48, 48) and img.dtype == np.uint8
    assert mask.shape == (6, 48, 48) and set(np.unique(mask)) == {0, 1}
    flair = img[1].astype(float)
    assert flair[mask == 1].mean() > flair[(mask == 0) & (flair > 50)].mean() + 40


def test_difficulty_lowers_contrast():
    def contrast(d):
        img, mask = brain_volume(np.random.default_rng(3), slices=6, size=48, difficulty=d)
        f = img[1].astype(float)
        return f[mask == 1].mean() - f[(mask == 0) & (f > 50)].mean()

    assert contrast(0.0) > contrast(1.0) + 30
    with pytest.raises(ValueError, match="difficulty"):
        brain_volume(np.random.default_rng(0), difficulty=2)


def test_kaggle_layout_records_sorted_by_slice_number(kaggle_set):
    assert detect_segmentation_layout(kaggle_set) == "kaggle_3m"
    ix = load_segmentation_dataset(kaggle_set)
    assert ix.task == "segment" and ix.layout == "kaggle_3m" and len(ix) == 4 * 6
    pats = [r.patient for r in ix.records]
    assert len(set(pats)) == 4
    first = [r for r in ix.records if r.patient == pats[0]]
    assert [r.meta["slice"] for r in first] == list(range(1, 7))
    assert all(r.mask.endswith("_mask.tif") for r in ix.records)


def test_kaggle_numeric_not_lexical_order(tmp_path):
    root = make_brain_mri_like(tmp_path / "d", patients=1, slices=12, size=32)
    ix = load_segmentation_dataset(root)
    assert [r.meta["slice"] for r in ix.records] == list(range(1, 13))


def test_nifti_and_nnunet_layouts(nifti_set, tmp_path):
    assert detect_segmentation_layout(nifti_set) == "volumes"
    ix = load_segmentation_dataset(nifti_set)
    assert len(ix) == 3 and all(r.meta["kind"] == "volume" for r in ix.records)
    nn = make_brain_mri_like(tmp_path / "nn", patients=2, slices=4, size=32, fmt="nnunet")
    assert json.loads((nn / "dataset.json").read_text())["numTraining"] == 2
    ix = load_segmentation_dataset(nn)
    assert ix.layout == "nnunet" and len(ix.records[0].meta["channels"]) == 3


def test_pairs_layout_folders_and_pattern(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "a" / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "a/images" / f"s{i}.png")
        Image.fromarray((rng.random((16, 16)) > 0.5).astype(np.uint8) * 255).save(tmp_path / "a/masks" / f"s{i}.png")
    ix = load_segmentation_dataset(tmp_path / "a")
    assert ix.layout == "pairs" and len(ix) == 3
    # same folder, custom naming convention
    b = tmp_path / "b"
    b.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(b / f"x{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(b / f"x{i}-seg.png")
    ix = load_segmentation_dataset(b, mask_pattern="{stem}-seg.png")
    assert sorted(r.path.rsplit("/", 1)[1] for r in ix.records) == ["x0.png", "x1.png"]


def test_missing_mask_and_size_mismatch_reported_rest_goes_on(kaggle_set, tmp_path):
    from tests.segment.conftest import tree_hash

    root = tmp_path / "copy"
    shutil.copytree(kaggle_set, root)
    case = min(p for p in root.iterdir() if p.is_dir())
    (case / f"{case.name}_2_mask.tif").unlink()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(case / f"{case.name}_3_mask.tif")
    before = tree_hash(root)
    ix = load_segmentation_dataset(root)
    assert len(ix) == 4 * 6 - 2
    reasons = {p.path.rsplit("/", 1)[1]: p.reason for p in ix.problems}
    assert "missing mask" in reasons[f"{case.name}_2.tif"]
    assert "20×20" in reasons[f"{case.name}_3_mask.tif"]
    assert tree_hash(root) == before


def test_bad_layout_and_folder(tmp_path):
    with pytest.raises(BadInputError, match="not a folder"):
        load_segmentation_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no segmentation layout"):
        load_segmentation_dataset(tmp_path / "empty")
    with pytest.raises(ConfigError, match="kaggle_3m"):
        load_segmentation_dataset(tmp_path / "empty", layout="kagle_3m")
