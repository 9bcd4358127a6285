"""Volumes carry one Geometry through segmentation: HD95 in mm uses the array-order spacing
(a swapped order would change the figure), the decoded-slice cache keeps the geometry, and
masks stay binary by default or keep their integer labels when asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medlens.io.geometry import Geometry
from medlens.io.volumes import write_volume
from medlens.segment.data import build_slices, read_volume_pair
from medlens.segment.layouts import load_segmentation_dataset
from medlens.segment.metrics import hd95
from medlens.segment.views import SliceView, VolumeView
from medlens.segment.volumes import build_volumes

# x, y (in-plane 0.5 mm) and z (4 mm slices), a rotated in-plane direction and an origin
GEO = Geometry((0.5, 0.5, 4.0), (10.0, -20.0, 30.0), (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
SHAPE = (16, 24, 24)  # (D, H, W)


class CopyImage(nn.Module):
    """Predicts the (windowed) image itself: lesion where the image is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - 0.5) * 40.0


def _truth() -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[4:8, 8:14, 8:14] = 1
    return m


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """One patient whose image is its lesion mask shifted by one slice (4 mm) along D."""
    root = tmp_path_factory.mktemp("geo") / "data"
    truth = _truth()
    image = np.roll(truth, 1, axis=0).astype(np.float32) * 1000.0
    write_volume(root / "images" / "p0.nii.gz", image, like=GEO)
    write_volume(root / "labels" / "p0.nii.gz", truth, like=GEO)
    return root


def _expected(truth: np.ndarray) -> tuple[float, float]:
    pred = np.roll(truth, 1, axis=0).astype(bool)
    return hd95(pred, truth.astype(bool), GEO.array_spacing), hd95(pred, truth.astype(bool), GEO.spacing)


def test_hd95_in_mm_uses_array_order_spacing_3d(shifted):
    vols = build_volumes(load_segmentation_dataset(shifted))
    pid = vols.patients[0]
    assert vols.geometry[pid] == GEO and vols.spacing[pid] == (4.0, 0.5, 0.5)
    rows, _, _ = VolumeView(vols, patch=SHAPE).evaluate(CopyImage(), "all", threshold=0.5)
    right, swapped = _expected(_truth())
    assert right == pytest.approx(4.0)  # one slice off: 4 mm, not 0.5 mm
    assert swapped < 1.0
    assert rows[pid]["hd95"] == pytest.approx(right)


def test_hd95_in_mm_uses_array_order_spacing_2d_slices(shifted, tmp_path):
    sl = build_slices(load_segmentation_dataset(shifted), cache_dir=tmp_path / "cache")
    pid = str(sl.patients[0])
    rows, _, _ = SliceView(sl, size=None, divisor=1).evaluate(CopyImage(), "all", threshold=0.5)
    assert rows[pid]["hd95"] == pytest.approx(_expected(_truth())[0])
    # the cache gives back the same Geometry, direction and origin included
    again = build_slices(load_segmentation_dataset(shifted), cache_dir=tmp_path / "cache")
    assert again.geometry == sl.geometry == {pid: GEO}
    # an in-plane resize scales the in-plane spacing only, and keeps the grid's edges
    small = build_slices(load_segmentation_dataset(shifted), size=12)
    g = small.geometry[pid]
    assert small.spacing[pid] == (4.0, 1.0, 1.0)
    np.testing.assert_allclose(g.index_to_world([-0.5, -0.5, -0.5]), GEO.index_to_world([-0.5, -0.5, -0.5]))


def _label_volume(root):
    lab = np.zeros((4, 8, 8), np.uint8)
    lab[1:3, 1:4, 1:4] = 1
    lab[1:3, 5:7, 5:7] = 2
    write_volume(root / "images" / "q.nii.gz", (lab * 100).astype(np.float32), like=GEO)
    write_volume(root / "labels" / "q.nii.gz", lab, like=GEO)
    return lab


def test_masks_binary_by_default_labels_on_request(tmp_path):
    lab = _label_volume(tmp_path)
    rec = load_segmentation_dataset(tmp_path).records[0]
    img, mask, geo, warns = read_volume_pair(rec)
    assert set(np.unique(mask)) == {0, 1} and warns and "label map" in warns[0].reason
    img, mask, geo, warns = read_volume_pair(rec, labels=True)
    np.testing.assert_array_equal(mask, lab)
    assert mask.dtype == np.uint8 and not warns and geo == GEO
    vols = build_volumes(load_segmentation_dataset(tmp_path), labels=True)
    assert set(np.unique(vols.masks[0])) == {0, 1, 2}
    sl = build_slices(load_segmentation_dataset(tmp_path), labels=True, cache_dir=tmp_path / "c")
    assert set(np.unique(sl.masks)) == {0, 1, 2}
    binary = build_slices(load_segmentation_dataset(tmp_path), cache_dir=tmp_path / "c")  # another cache entry
    assert set(np.unique(binary.masks)) == {0, 1}


def test_2d_label_masks_kept_on_request_and_bad_labels_refused(tmp_path):
    from medlens.errors import BadInputError
    from medlens.segment.data import label_mask

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "images" / f"s{i}.png")
        m = np.zeros((16, 16), np.uint8)
        m[2:6, 2:6], m[9:12, 9:12] = 1, 3
        Image.fromarray(m).save(tmp_path / "masks" / f"s{i}.png")
    ix = load_segmentation_dataset(tmp_path)
    assert set(np.unique(build_slices(ix, labels=True).masks)) == {0, 1, 3}
    assert set(np.unique(build_slices(ix).masks)) == {0, 1}
    assert label_mask(np.array([0, 300]), "m").dtype == np.uint16
    with pytest.raises(BadInputError, match="non-negative integer"):
        label_mask(np.array([0.0, 1.5]), "m.nii.gz")


def test_mask_with_another_geometry_is_named(tmp_path):
    truth = _truth()
    write_volume(tmp_path / "images" / "p.nii.gz", truth.astype(np.float32), like=GEO)
    write_volume(tmp_path / "labels" / "p.nii.gz", truth, like=Geometry.identity(3))
    _, _, geo, warns = read_volume_pair(load_segmentation_dataset(tmp_path).records[0])
    assert geo == GEO and any("mask geometry" in w.reason for w in warns)
