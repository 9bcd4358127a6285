"""Shifted copies of the reference nodules (the nodule network's positives, which are few)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from medlens.ct.fitting import positive_points
from medlens.ct.train import CtConfig


def test_positive_copies_keep_centres_and_stay_within_the_shift() -> None:
    centres = np.array([[10.0, -20.0, -100.0], [-30.0, 5.0, -140.0]])
    diam = np.array([4.0, 20.0])
    pts = positive_points(centres, diam, 6, 0.3, np.random.default_rng(0))
    assert pts.shape == (2 * 6, 3)
    np.testing.assert_array_equal(pts[:2], centres)  # the centres themselves come first
    copies = pts[2:].reshape(2, 5, 3)
    off = np.abs(copies - centres[:, None, :])
    assert np.all(off <= 0.3 * diam[:, None, None] + 1e-9)
    assert off[0].max() < 1.3 < off[1].max()  # the shift scales with each nodule's diameter
    assert len(np.unique(copies.reshape(-1, 3), axis=0)) == 10  # distinct points, not repeats


def test_one_copy_or_no_nodules_gives_the_centres() -> None:
    centres = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(positive_points(centres, np.array([8.0]), 1, 0.3, np.random.default_rng(0)),
                                  centres)
    assert positive_points(np.zeros((0, 3)), np.zeros(0), 8, 0.3, np.random.default_rng(0)).shape == (0, 3)


def test_config_rejects_no_positive_copies() -> None:
    with pytest.raises(ValidationError, match="positive_copies"):
        CtConfig(data="x", positive_copies=0)
