"""Report section and 2D overlays."""

from __future__ import annotations

import numpy as np

from medlens.explain import overlay_image, report_section, save_overlay
from medlens.io import read_image


def test_report_section(square_model):
    model, x, y, _ = square_model
    preds = y.clone()
    preds[0] = 1 - preds[0]  # one error so a false group is filled
    title, html = report_section(
        model,
        x[:12],
        y[:12],
        preds[:12],
        classes=["empty", "square"],
        per_group=2,
        faithfulness_images=4,
        methods=["gradcam"],
    )
    assert title == "Explanations"
    for group in ("True positives", "False positives", "True negatives", "False negatives"):
        assert group in html
    assert html.count("data:image/png;base64,") >= 5
    assert "<table>" in html and "Most faithful" in html


def test_overlay_2d(square_model, tmp_path):
    _, x, _, _ = square_model
    heat = np.zeros((32, 32), np.float32)
    heat[5, 5] = 1.0
    rgb = overlay_image(x[0], heat)
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and rgb.shape[1] >= 2 * rgb.shape[0] - 8
    p = save_overlay(tmp_path / "sub" / "o.png", x[0], heat)
    assert read_image(p).shape == rgb.shape
