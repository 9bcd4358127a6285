"""3D classifiers: volume maps and slice/projection overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens.explain import explain, save_overlay
from medlens.io import read_image


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion", "integrated-gradients"])
def test_3d_map_shape(cube_model, method):
    model, x, _, _ = cube_model
    maps = explain(model, x[:2], method=method)
    assert maps.shape == (2, 16, 16, 16)
    assert 0.0 <= maps.min() and maps.max() <= 1.0


def test_3d_lime_runs(cube_model):
    model, x, _, _ = cube_model
    assert explain(model, x[:1], method="lime", n_samples=30, n_segments=20).shape == (
        1,
        16,
        16,
        16,
    )


def test_3d_gradcam_points_at_cube(cube_model):
    model, x, y, boxes = cube_model
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.85
    pos = (y == 1).numpy()
    maps = explain(model, x[pos], method="gradcam", target=1)
    hits = 0
    for m, b in zip(maps, boxes[pos]):
        p = np.unravel_index(int(m.argmax()), m.shape)
        hits += all(b[k] - 1 <= p[k] < b[k + 3] + 1 for k in range(3))
    assert hits / len(maps) >= 0.75


def test_3d_overlay_png(cube_model, tmp_path):
    model, x, _, _ = cube_model
    maps = explain(model, x[:1], method="gradcam")
    path = save_overlay(tmp_path / "vol.png", x[0], maps[0])
    img = read_image(path)
    # 2 rows (slices through peak, projections) × 3 axes, each panel enlarged to ≥ 160 px
    assert img.shape[0] >= 2 * 160 and img.shape[1] >= 3 * 160 and img.shape[2] == 3
