"""Deletion/insertion curves: a map that follows the model must beat random maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medlens.errors import ConfigError
from medlens.explain import evaluate_faithfulness, make_target, perturbation_curves
from medlens.explain.base import forward
from medlens.explain.faithfulness import auc, make_baseline

from .conftest import TinyCNN


def test_auc_trapezoid():
    np.testing.assert_allclose(auc(np.array([[1.0, 1.0, 1.0], [1.0, 0.5, 0.0]])), [1.0, 0.5])


def test_curves_endpoints(square_model):
    model, x, _, _ = square_model
    xi = x[:2]
    tgt = make_target(forward(model, xi))
    maps = np.random.default_rng(0).random((2, 32, 32))
    d, ins = perturbation_curves(model, xi, maps, tgt, steps=4)
    assert d.shape == ins.shape == (2, 5)
    full = tgt(forward(model, xi), prob=True).numpy()
    base = tgt(forward(model, make_baseline(xi, "mean")), prob=True).numpy()
    np.testing.assert_allclose(d[:, 0], full, atol=1e-5)  # nothing deleted yet
    np.testing.assert_allclose(ins[:, -1], full, atol=1e-5)  # everything inserted
    np.testing.assert_allclose(d[:, -1], base, atol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        perturbation_curves(model, xi, maps[:, :16], tgt)


def test_gradcam_beats_random(square_model):
    model, x, y, _ = square_model
    pos = x[(y == 1)][:8]
    table = evaluate_faithfulness(model, pos, ["gradcam", "occlusion"], n_random=2)
    grad, rnd = table.row("gradcam"), table.row("random")
    assert grad.deletion_auc < rnd.deletion_auc - 0.2
    assert table.beats_random("gradcam")
    assert table.best in {"gradcam", "occlusion"}
    assert "Most faithful for this model and data" in table.verdict()
    d = json.loads(json.dumps(table.to_dict()))
    assert d["best"] == table.best and len(d["rows"]) == 3
    assert "<table>" in table.to_html()


def test_blur_baseline_and_bad_baseline(square_model):
    model, x, _, _ = square_model
    blurred = make_baseline(x[:1], "blur")
    assert blurred.shape == x[:1].shape and blurred.std() < x[:1].std()
    with pytest.raises(ConfigError, match="Did you mean 'blur'"):
        evaluate_faithfulness(model, x[:1], ["gradcam"], baseline="blurr")


def test_cam_skipped_for_model_without_convs():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).eval()
    table = evaluate_faithfulness(
        model, torch.randn(2, 3, 8, 8), ["gradcam", "occlusion"], n_random=1
    )
    assert "gradcam" in table.skipped
    assert [r.method for r in table.rows] == ["occlusion", "random"]


def test_untrained_vs_trained_tiny():
    """Sanity: an untrained model's output barely depends on the maps (no crash)."""
    model = TinyCNN().eval()
    table = evaluate_faithfulness(model, torch.randn(2, 3, 16, 16), ["gradcam"], steps=5)
    assert 0.0 <= table.row("gradcam").deletion_auc <= 1.0
