"""Nodule size measured on the image (medlens.ct.sizing): balls of known size in lung, alone,
on a vessel and on the chest wall; nothing to measure in empty lung."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.ct.sizing import measure_diameter

SP = 0.5


def _lung(n: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    g = (np.arange(n) - (n - 1) / 2.0) * SP
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    rng = np.random.default_rng(0)
    return np.full((n, n, n), -850.0) + rng.normal(0, 15, (n, n, n)), [zz, yy, xx]


def _ball(hu: np.ndarray, axes: list[np.ndarray], radius: float, value: float, at=(0.0, 0.0, 0.0)) -> None:
    r = np.sqrt(sum((a - c) ** 2 for a, c in zip(axes, at, strict=True)))
    frac = np.clip(0.5 + (radius - r) / SP, 0, 1)  # partial volume at the edge
    hu += (value - hu) * frac


@pytest.mark.parametrize(("radius", "value"), [(2.0, 40.0), (5.0, 40.0), (7.0, -450.0)])
def test_a_ball_in_lung_measures_its_diameter(radius: float, value: float) -> None:
    hu, axes = _lung()
    _ball(hu, axes, radius, value, at=(1.0, -1.5, 0.5))  # the finding's centre 1.9 mm off the ball's
    assert measure_diameter(hu, SP) == pytest.approx(2 * radius, rel=0.12)


def test_a_vessel_through_the_nodule_is_not_counted() -> None:
    hu, axes = _lung()
    zz, yy, xx = axes
    tube = np.sqrt(yy**2 + xx**2) <= 1.2  # a 2.4 mm vessel along the whole crop
    hu[tube] = 40.0
    _ball(hu, axes, 4.0, 40.0)
    d = measure_diameter(hu, SP)
    assert d == pytest.approx(8.0, rel=0.15)
    lump = hu > -400  # what a plain threshold-and-volume measure would count: ball and vessel
    naive = (6 * lump.sum() * SP**3 / np.pi) ** (1 / 3)
    assert naive - 8.0 > 2 * abs(d - 8.0)


def test_a_juxta_pleural_nodule_is_measured_without_the_wall() -> None:
    hu, axes = _lung()
    zz, yy, xx = axes
    hu[xx > 5.0] = 40.0  # the chest wall, 5 mm from the centre
    _ball(hu, axes, 5.0, 40.0, at=(0.0, 0.0, 1.0))  # touching it
    assert measure_diameter(hu, SP) == pytest.approx(10.0, rel=0.25)


def test_a_lump_larger_than_the_crop_is_measured_on_a_larger_one() -> None:
    """A finding whose scale (7 mm) is a third of its nodule's size (24 mm): the first crop is too
    small (the lump reaches its edge), the next one holds it."""
    from medlens.ct.findings import Finding
    from medlens.ct.sizing import crop_spec_for, measure_findings
    from medlens.io.geometry import Geometry
    from medlens.io.volumes import Volume

    hu, axes = _lung(128)
    _ball(hu, axes, 12.0, 40.0, at=(0.0, 2.0, 0.0))
    small = crop_spec_for(7.0)
    assert small.field_mm[0] < 24.0
    vol = Volume(hu.astype(np.float32), Geometry((SP, SP, SP), (0.0, 0.0, 0.0)))
    c = (63.5, 63.5, 63.5)
    found = Finding("s", tuple(vol.geometry.index_to_world(np.array([c]))[0]), c, 7.0, 0.9)
    assert measure_findings(vol, [found])[0] == pytest.approx(24.0, rel=0.1)


def test_empty_lung_has_no_size() -> None:
    hu, _ = _lung()
    assert np.isnan(measure_diameter(hu, SP))
