"""The training-data fingerprint and the out-of-distribution check against it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medlens.data.fingerprint import (
    ImageStats,
    array_stats,
    check,
    compute_fingerprint,
    file_stats,
    fingerprint_index,
    read_with_stats,
)
from medlens.io.images import read_image


@pytest.fixture(scope="module")
def idc_set(tmp_path_factory):
    """Synthetic IDC-like patches (50 px, 8-bit RGB PNG) and a fingerprint of 3 of its 4 patients."""
    from medlens.data.layouts import load_dataset
    from medlens.data.synthetic import make_idc_like

    root = make_idc_like(tmp_path_factory.mktemp("fp") / "idc", patients=4, patches_per_patient=25, seed=3)
    index = load_dataset(root)
    pats = sorted({r.patient for r in index.records})
    train = index.subset([r for r in index.records if r.patient != pats[-1]])
    held = [r.path for r in index.records if r.patient == pats[-1]]
    fp = fingerprint_index(train, split=None)
    return fp, held


def test_fingerprint_describes_the_training_images(idc_set):
    fp, _ = idc_set
    assert fp["channels"] == [3] and fp["bit_depth"] == [8]
    assert fp["formats"] == {"png": fp["n_images"]} and fp["n_images"] == 75
    assert fp["modality"] == "histopathology (H&E)"  # known from the IDC layout
    assert fp["size"]["height"][1] == 50 and fp["size"]["width"][1] == 50 and fp["size"]["depth"] is None
    assert set(fp["pixels"]) == {"red", "green", "blue"}
    q = fp["pixels"]["red"]["quantiles"]
    assert 0 <= q["1"] <= q["50"] <= q["99"] <= 255
    assert {"mean red", "SD blue", "saturation", "red-green", "yellow-blue"} <= set(fp["stats"])
    assert json.loads(json.dumps(fp)) == fp  # stored as JSON in the package metadata


def test_held_out_patient_is_not_flagged(idc_set):
    fp, held = idc_set
    flagged = {p: check(file_stats(p), fp).reasons for p in held}
    assert not any(flagged.values()), {p: r for p, r in flagged.items() if r}


def test_16_bit_noise_is_flagged(idc_set, tmp_path):
    fp, _ = idc_set
    noise = np.random.default_rng(0).integers(0, 65535, (50, 50), dtype=np.uint16)
    Image.fromarray(noise).save(tmp_path / "noise16.png")
    r = check(file_stats(tmp_path / "noise16.png"), fp)
    assert r.ood
    assert "16-bit input, trained on 8-bit" in r.reasons
    assert "1 channel, trained on 3" in r.reasons


def test_grey_image_to_an_rgb_model_is_flagged(idc_set, tmp_path):
    fp, held = idc_set
    grey = read_image(held[0], channels=1)[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    r = check(file_stats(tmp_path / "grey.png"), fp)
    assert r.reasons == ["1 channel, trained on 3"]


def test_very_different_size_is_flagged(idc_set):
    fp, held = idc_set
    big = np.asarray(Image.fromarray(read_image(held[0])).resize((512, 512)))
    r = check(array_stats(big), fp)
    assert r.ood and len(r.reasons) == 1
    assert r.reasons[0].startswith("size 512×512 px outside the training range")
    assert "50" in r.reasons[0]


def test_very_different_colour_is_flagged(idc_set):
    fp, held = idc_set
    img = read_image(held[0]).astype(np.int16)
    green = np.clip(img[..., [1, 0, 2]] + np.array([0, 60, -60]), 0, 255).astype(np.uint8)  # H&E turned green
    r = check(array_stats(green), fp)
    assert r.ood and r.score > 2.0
    assert any(x.startswith("colour: red-green") and "SD below the training images" in x for x in r.reasons)
    assert not check(array_stats(img.astype(np.uint8)), fp).ood  # the same patch in its own colours


def test_modality_and_volume_depth(idc_set):
    fp, _ = idc_set
    ct = ImageStats(channels=3, bit_depth=8, height=50, width=50, format="dicom", modality="CT")
    assert "modality CT, trained on histopathology (H&E)" in check(ct, fp).reasons
    vols = [array_stats(np.full((1, d, 32, 32), 100, np.uint8)) for d in (20, 24)]
    vfp = compute_fingerprint(vols)
    assert vfp["size"]["depth"] == [20, 24] and vfp["size"]["height"] == [32, 32]
    assert not check(array_stats(np.full((1, 22, 32, 32), 100, np.uint8)), vfp).ood
    thin = check(array_stats(np.full((1, 4, 32, 32), 100, np.uint8)), vfp)
    assert thin.reasons and "depth 20–24" in thin.reasons[0]


def test_read_with_stats_returns_what_the_model_reads(tmp_path):
    deep = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 40)
    Image.fromarray(deep).save(tmp_path / "d.png")
    stats, img = read_with_stats(tmp_path / "d.png")
    assert stats.bit_depth == 16 and stats.channels == 1 and (stats.height, stats.width) == (40, 30)
    np.testing.assert_array_equal(img, read_image(tmp_path / "d.png"))


def test_compute_fingerprint_refuses_nothing():
    with pytest.raises(ValueError, match="no images"):
        compute_fingerprint([])
