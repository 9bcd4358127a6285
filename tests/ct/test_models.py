"""Lung mask, crops, cache, crop CNN, augmentation and candidate grouping on small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens.ct.candidates import context_stack, group_candidates, predict_probability
from medlens.ct.classifier import CropAugment, augment_crops, score_crops
from medlens.ct.crops import CropSpec, ScanCache, extract_crops, sphere_mask
from medlens.ct.findings import NODULE_COLUMNS, Finding
from medlens.ct.lungs import lung_mask
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume
from medlens.models import create_model
from medlens.transforms.intensity import FixedWindow

SPACING_IRC = (2.5, 0.8, 0.8)


def _chest(shape: tuple[int, int, int] = (24, 96, 96)) -> tuple[np.ndarray, dict[str, tuple[int, int, int]]]:
    """Air around a soft-tissue body with two dark lungs, a nodule in the left lung and one on
    the lung wall (juxta-pleural). Returns HU and the nodule centres (i, r, c)."""
    d, h, w = shape
    i, r, c = np.ogrid[:d, :h, :w]
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = ((r - h / 2) / (h * 0.42)) ** 2 + ((c - w / 2) / (w * 0.45)) ** 2 <= 1
    hu[np.broadcast_to(body, shape)] = 20.0
    for cx in (w * 0.3, w * 0.7):
        lung = ((r - h / 2) / (h * 0.3)) ** 2 + ((c - cx) / (w * 0.14)) ** 2 <= 1
        hu[(i >= 3) & (i < d - 3) & lung] = -850.0
    inner = (12, 48, 29)
    wall = (12, 48, int(w * 0.3 - w * 0.14) + 1)  # on the outer wall of the left lung
    for ctr in (inner, wall):
        hu[(i - ctr[0]) ** 2 * 6 + (r - ctr[1]) ** 2 + (c - ctr[2]) ** 2 <= 16] = 200.0  # bright: the test 'U-Net' tells it from the body
    return hu, {"inner": inner, "wall": wall}


def test_lung_mask_keeps_lungs_and_wall_nodules_not_outside_air() -> None:
    hu, nod = _chest()
    lungs = lung_mask(hu, SPACING_IRC, margin_mm=2.0)
    assert lungs.found
    full = lungs.full()
    assert full.shape == hu.shape
    lung_vox = hu == -850.0
    assert full[lung_vox].mean() > 0.97  # the lungs are in
    assert not full[0:24, 0:3, 0:3].any() and not full[:, 48, 0:3].any()  # the air around the body is out
    assert lungs.contains(np.array([nod["inner"], nod["wall"]], dtype=float)).all()
    assert not lungs.contains(np.array([[12.0, 5.0, 5.0]]))[0]
    # the box is the lungs (+ margin), not the whole scan
    box = lungs.bbox
    assert box[2].start > 5 and box[2].stop < 91 and box[1].start > 10


def test_lung_mask_keeps_a_large_juxta_pleural_nodule() -> None:
    """A 20 mm nodule centred on the lung wall dents the lung deeply; the closing (15 mm) brings
    it back (a 10 mm closing, the earlier default, left its centre out)."""
    d, h, w = 30, 200, 200
    hu, _ = _chest((d, h, w))
    i, r, c = np.ogrid[:d, :h, :w]
    ctr = (15.0, 100.0, int(w * 0.3 - w * 0.14) + 2 / 0.8)
    hu[((i - ctr[0]) * 2.5) ** 2 + ((r - ctr[1]) * 0.8) ** 2 + ((c - ctr[2]) * 0.8) ** 2 <= 10.0**2] = 30.0
    assert lung_mask(hu, SPACING_IRC).contains(np.array([ctr]))[0]
    assert not lung_mask(hu, SPACING_IRC, closing_mm=10.0).contains(np.array([ctr]))[0]


def test_lung_mask_without_lungs_is_the_whole_volume() -> None:
    hu = np.zeros((8, 32, 32), dtype=np.float32)
    lungs = lung_mask(hu, (1.0, 1.0, 1.0))
    assert not lungs.found and lungs.full().all()
    assert lungs.bbox == (slice(0, 8), slice(0, 32), slice(0, 32))


def test_crops_are_in_millimetres_and_centred() -> None:
    hu = np.full((20, 60, 60), -1000.0, dtype=np.float32)
    hu[10, 30, 30] = 400.0  # one bright voxel
    spec = CropSpec(shape=(5, 9, 9), spacing_mm=(2.5, 0.4, 0.4))  # half the in-plane spacing
    crops = extract_crops(hu, SPACING_IRC, np.array([[10.0, 30.0, 30.0], [10.0, 30.0, 31.0], [0, 0, -50.0]]), spec)
    assert crops.shape == (3, 5, 9, 9) and crops.dtype == np.float32
    assert np.unravel_index(crops[0].argmax(), crops[0].shape) == (2, 4, 4)
    assert crops[0].max() == pytest.approx(1.0) and crops[0].min() == pytest.approx(0.0)
    # a centre one voxel (0.8 mm) to the right: the bright voxel is 2 crop voxels (0.4 mm each) left
    assert np.unravel_index(crops[1].argmax(), crops[1].shape) == (2, 4, 2)
    assert np.all(crops[2] == 0.0)  # outside the scan: air


def test_sphere_mask_volume_in_mm() -> None:
    geo = Geometry((0.8, 0.8, 2.5), (-40.0, -40.0, 100.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    centre_xyz = geo.index_to_world([10.0, 30.0, 30.0])
    m = sphere_mask((20, 64, 64), geo, centre_xyz[None], np.array([12.0]))
    expected = 4 / 3 * np.pi * 6.0**3 / geo.voxel_volume
    assert m.sum() == pytest.approx(expected, rel=0.1)
    ii = np.nonzero(m.any(axis=(1, 2)))[0]
    assert ii.min() >= 10 - 3 and ii.max() <= 10 + 3  # 6 mm radius = 2.4 slices of 2.5 mm
    boxed = sphere_mask((20, 64, 64), geo, centre_xyz[None], np.array([12.0]),
                        box=(slice(10, 11), slice(20, 40), slice(20, 40)))
    assert boxed.shape == (1, 20, 20) and np.array_equal(boxed[0], m[10, 20:40, 20:40])


def test_scan_cache_reads_once_and_keeps_the_input(tmp_path) -> None:
    src = tmp_path / "scan.npy"
    np.save(src, np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    before = src.read_bytes()
    calls = []

    def reader(p):  # noqa: ANN001, ANN202
        calls.append(p)
        return Volume(np.load(p).astype(np.float32) - 0.4, Geometry((0.7, 0.7, 2.0)), path=str(p),
                      meta={"seriesuid": "s1", "shape": [2, 3, 4]})

    cache = ScanCache(tmp_path / "cache")
    a = cache.load(src, reader)
    b = cache.load(src, reader)
    assert len(calls) == 1
    assert isinstance(b.array, np.memmap) and b.array.dtype == np.int16
    assert np.array_equal(a.array, np.arange(24).reshape(2, 3, 4)) and np.array_equal(b.array, a.array)
    assert b.geometry.spacing == (0.7, 0.7, 2.0) and b.meta["seriesuid"] == "s1"
    assert src.read_bytes() == before and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("name", ["test_ct_crop_cnn", "ct_crop_cnn"])
def test_crop_cnn_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_channels=1, spatial_dims=3)
    x = torch.rand(3, 1, 12, 20, 20, requires_grad=True)
    y = model(x)
    assert y.shape == (3, 2) and torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError):
        create_model(name if name == "ct_crop_cnn" else "ct_crop_cnn", num_classes=2, in_channels=1, spatial_dims=2)


_NO_INTENSITY = {"noise": 0, "hu_shift": 0, "contrast": 0, "correlated_noise": 0, "blur": 0}


def test_augment_mirror_only_flips_and_rotation_keeps_slices() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 1, 6, 10, 10)
    out = augment_crops(x, CropAugment(shift=0, scale=0, rotate=False, **_NO_INTENSITY))
    flips = [[d for d, f in zip((2, 3, 4), bits, strict=True) if f] for bits in np.ndindex(2, 2, 2)]
    for k in range(len(x)):
        assert any(torch.allclose(out[k], torch.flip(x[k], [d - 1 for d in dims]) if dims else x[k], atol=1e-5)
                   for dims in flips)
    # constant slices (value = slice index): a rotation about the head-foot axis leaves them alone
    ramp = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(4, 1, 6, 10, 10) / 5
    rot = augment_crops(ramp, CropAugment(mirror=False, shift=0, scale=0, rotate=True, **_NO_INTENSITY))
    assert torch.allclose(rot, ramp, atol=1e-5)
    assert augment_crops(x, CropAugment(enabled=False)) is x


def test_intensity_augmentation_varies_offset_contrast_and_sharpness() -> None:
    """Crops of one flat lung value with a bright cube come out with different offsets,
    contrasts and edge blur per crop (a phantom-trained network must not rely on exact HU)."""
    torch.manual_seed(0)
    x = torch.full((64, 1, 8, 12, 12), 0.1)
    x[:, :, 2:6, 4:8, 4:8] = 0.75
    geo = {"mirror": False, "shift": 0, "scale": 0, "rotate": False}
    out = augment_crops(x, CropAugment(**geo, noise=0, correlated_noise=0, blur=0, hu_shift=0.05, contrast=0.2))
    lung, core = out[:, 0, 0, 0, 0], out[:, 0, 4, 6, 6]
    assert lung.std() > 0.01 and (core - lung).std() > 0.03  # offset and contrast vary per crop
    assert torch.all((core - lung - 0.65).abs() <= 0.65 * 0.2 + 1e-5)
    blurred = augment_crops(x, CropAugment(**geo, noise=0, correlated_noise=0, hu_shift=0, contrast=0, blur=1.0))
    edge = blurred[:, 0, 4, 6, 3]  # just outside the cube: raised by the blur in some crops, by < 1 voxel's mix
    assert edge.max() > 0.15 and edge.min() < edge.max() and torch.all(blurred <= 0.75 + 1e-5)
    noisy = augment_crops(x, CropAugment(**geo, noise=0, hu_shift=0, contrast=0, blur=0, correlated_noise=0.05))
    d = noisy - x
    # correlated: neighbouring voxels' noise agrees far more than white noise would
    assert float(torch.corrcoef(torch.stack([d[..., 1:].flatten(), d[..., :-1].flatten()]))[0, 1]) > 0.4


def test_score_crops_batches() -> None:
    model = create_model("test_ct_crop_cnn", num_classes=2, in_channels=1, spatial_dims=3)
    crops = np.random.default_rng(0).random((5, 8, 12, 12)).astype(np.float32)
    p = score_crops(model, crops, batch_size=2)
    assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))
    assert np.allclose(p, score_crops(model, crops, batch_size=5), atol=1e-6)


def test_context_stack_channels_are_neighbour_slices() -> None:
    vol = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), np.float32)
    st = context_stack(vol, np.array([0, 4]), context=2)
    assert st.shape == (2, 5, 2, 2)
    assert st[0, :, 0, 0].tolist() == [0, 0, 0, 1, 2] and st[1, :, 0, 0].tolist() == [2, 3, 4, 4, 4]


class _CentreSlice(nn.Module):
    """A 'U-Net' that flags the focus slice above 160 HU: the probability shows which channel it read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1] - 0.8) * 40


def test_candidates_from_probability_map_world_and_index_agree() -> None:
    hu, nod = _chest()
    lungs = lung_mask(hu, SPACING_IRC, margin_mm=2.0)
    prob, box = predict_probability(_CentreSlice(), hu, lungs, window=FixedWindow(output="float32"), context=3,
                                    batch_size=5, divisor=16)
    assert prob.shape == tuple(s.stop - s.start for s in box)
    geo = Geometry((0.8, 0.8, 2.5), (-38.0, -20.0, -300.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))  # turned 90° in-plane
    found = group_candidates(prob, box, geo, seriesuid="s", threshold=0.5, lungs=lungs)
    centres = np.array([f.center_irc for f in found])
    # both nodules are candidates, centred on the truth (the wall one, half inside the chest wall,
    # loses its part beyond the lung margin: within a voxel)
    for name, tol in (("inner", 0.1), ("wall", 1.0)):
        assert np.min(np.linalg.norm(centres - np.array(nod[name]), axis=1)) < tol, name
    assert all(v > -700 for v in hu[tuple(np.rint(centres).astype(int).T)])  # no candidate in lung air
    for f in found:
        assert np.allclose(geo.world_to_index(f.center_xyz), f.center_irc, atol=1e-6)
        assert set(f.to_row()) == set(NODULE_COLUMNS) and Finding.from_row(f.to_row()).center_irc == f.center_irc
    big = max(found, key=lambda f: f.voxels)
    assert 4.0 < big.diameter_mm < 12.0
    assert big.nodule_prob == pytest.approx(1 / (1 + np.exp(-((1200 / 1400 - 0.8) * 40))), rel=1e-4)  # 200 HU
    assert group_candidates(prob, box, geo, seriesuid="s", threshold=1.01) == []
