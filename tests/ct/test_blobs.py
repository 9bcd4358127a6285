"""Hessian blob candidates: balls are found, tubes (vessels) are not; union with the U-Net's."""

from __future__ import annotations

import numpy as np

from medlens.ct.blobs import BlobParams, detect_blobs, merge_candidates
from medlens.ct.detect import DetectParams
from medlens.ct.findings import Finding
from medlens.ct.lungs import lung_mask
from medlens.data.synthetic.chest_ct import chest_ct_phantom
from medlens.io.geometry import Geometry


def _lung_box(shape: tuple[int, int, int]) -> np.ndarray:
    """A chest slab: soft tissue around one big block of lung (-850 HU)."""
    hu = np.full(shape, 40.0, dtype=np.float32)
    hu[2:-2, 8:-8, 8:-8] = -850.0
    return hu


def test_ball_is_a_blob_and_a_tube_is_not() -> None:
    """A 10 mm ball and a 4 mm-thick vessel through the lung: only the ball is a candidate."""
    geo = Geometry((0.8, 0.8, 2.0), (0.0, 0.0, 0.0))
    hu = _lung_box((30, 96, 96))
    ii, rr, cc = np.meshgrid(np.arange(30) * 2.0, np.arange(96) * 0.8, np.arange(96) * 0.8, indexing="ij")
    ball = (ii - 30) ** 2 + (rr - 25) ** 2 + (cc - 25) ** 2 <= 5.0**2
    tube = (rr - 55) ** 2 + (cc - 55) ** 2 <= 2.0**2  # runs head-foot: a round dot in every slice
    tube &= (ii > 6) & (ii < 52)
    hu[ball | tube] = 40.0
    hu += np.random.default_rng(0).normal(0, 15, hu.shape).astype(np.float32)
    lungs = lung_mask(hu, geo.array_spacing)
    found = detect_blobs(hu, geo, lungs, seriesuid="s")
    xyz = np.array([f.center_xyz for f in found])
    assert len(found) >= 1
    d_ball = np.linalg.norm(xyz - [25.0, 25.0, 30.0], axis=1)
    assert d_ball.min() < 3.0 and found[int(np.argmin(d_ball))] is found[0]  # the ball is the strongest
    assert 6.0 <= found[0].diameter_mm <= 14.0
    # nothing on the tube's straight stretch (its ends are cap-shaped and may answer weakly)
    on_tube = (np.hypot(xyz[:, 0] - 55, xyz[:, 1] - 55) < 3) & (xyz[:, 2] > 20) & (xyz[:, 2] < 90)
    assert not on_tube.any()
    assert detect_blobs(hu, geo, lungs, seriesuid="s", params=BlobParams(enabled=False)) == []


def test_blobs_find_phantom_nodules() -> None:
    """Most phantom nodules ≥ 5 mm lie within their radius of a blob, without any training."""
    hit = total = 0
    for seed in range(3):
        ph = chest_ct_phantom(seed, n_nodules=3)
        lungs = lung_mask(ph.hu, ph.geometry.array_spacing)
        found = detect_blobs(ph.hu, ph.geometry, lungs, seriesuid="p")
        assert len(found) <= BlobParams().max_blobs
        pts = np.array([f.center_xyz for f in found]).reshape(-1, 3)
        for n in ph.nodules:
            if n.diameter_mm >= 5:
                total += 1
                hit += bool(len(pts)) and bool(np.min(np.linalg.norm(pts - n.center_xyz, axis=1)) < n.diameter_mm / 2)
    assert total >= 3 and hit / total >= 0.75


def test_merge_keeps_first_and_adds_only_new_points() -> None:
    def f(x: float, d: float = 6.0) -> Finding:
        return Finding("s", (x, 0.0, 0.0), (0.0, 0.0, x), d, 0.5, None)

    first = [f(0.0, 10.0), f(50.0)]
    merged = merge_candidates(first, [f(3.0), f(20.0), f(52.0)])
    assert [m.center_xyz[0] for m in merged] == [0.0, 50.0, 20.0]
    assert merge_candidates([], [f(1.0)])[0].center_xyz[0] == 1.0
    # a blob 7 mm from the centre of a 20 mm U-Net component (a nodule joined to a vessel): kept by
    # centre distance, swallowed by the component's radius
    big = [f(0.0, 20.0)]
    assert len(merge_candidates(big, [f(7.0)])) == 2 and len(merge_candidates(big, [f(7.0)], by="radius")) == 1
    blobs = DetectParams().to_dict()["blobs"]
    assert BlobParams.from_dict(blobs).merge_by == "centre"
    assert BlobParams.from_dict({k: v for k, v in blobs.items() if k != "merge_by"}).merge_by == "radius"


def test_detect_params_keep_blob_settings_and_old_packages_have_none() -> None:
    p = DetectParams(blobs=BlobParams(max_blobs=7, min_blobness=55.0))
    back = DetectParams.from_dict(p.to_dict())
    assert back.blobs == p.blobs
    old = p.to_dict()
    del old["blobs"]
    assert DetectParams.from_dict(old).blobs.enabled is False  # a package from before blobs: U-Net only


def test_small_nodule_blob_lands_within_its_radius() -> None:
    """A 3.4 mm nodule between grid points of 1 mm slices: with each radius on a grid no coarser
    than its scale and the peak placed between grid points, the blob is within the nodule's
    radius (the LUNA16 hit rule); the one 2.5 mm grid of older packages puts it farther off."""
    geo = Geometry((0.7, 0.7, 1.0), (0.0, 0.0, 0.0))
    shape = (48, 96, 96)
    centre_irc = np.array([23.6, 47.3, 40.6])  # deliberately off every grid point
    hu = _lung_box(shape)
    ii, rr, cc = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, (1.0, 0.7, 0.7))), indexing="ij")
    mm = centre_irc * [1.0, 0.7, 0.7]
    hu[(ii - mm[0]) ** 2 + (rr - mm[1]) ** 2 + (cc - mm[2]) ** 2 <= 1.7**2] = 40.0
    lungs = lung_mask(hu, geo.array_spacing)
    want = geo.index_to_world(centre_irc[None])[0]

    def nearest(params: BlobParams) -> float:
        found = detect_blobs(hu, geo, lungs, seriesuid="s", params=params)
        return float(np.min(np.linalg.norm(np.array([f.center_xyz for f in found]) - want, axis=1)))

    assert nearest(BlobParams()) < 0.5  # well inside the 1.7 mm radius (one grid: ~1 mm off)
    assert nearest(BlobParams()) < nearest(BlobParams(grid_per_radius=False))
    blobs = DetectParams().to_dict()["blobs"]
    assert BlobParams.from_dict(blobs).grid_per_radius is True
    assert BlobParams.from_dict({k: v for k, v in blobs.items() if k != "grid_per_radius"}).grid_per_radius is False
