"""Candidate descriptors (shape and intensity of what sits at a candidate) and the ranker
fitted on them: the curvature is the true Hessian, a ball and a tube get the descriptors that
tell them apart, the ranker learns a separable signal and survives a weights-only reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medlens.ct.crops import CropSpec
from medlens.ct.features import (
    FEATURE_CROP,
    FEATURE_NAMES,
    FINE_CROP,
    crop_features,
    hessian_at_centre,
)
from medlens.ct.ranker import INPUT_SETS, fit_ranker, rank, ranker_inputs, strongest_inputs
from medlens.models import create_model


def _mm_grid(spec: CropSpec) -> list[np.ndarray]:
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(spec.shape, spec.spacing_mm, strict=True)]
    return np.meshgrid(*axes, indexing="ij")


def test_hessian_at_the_centre_is_the_quadratics_second_derivatives():
    zz, yy, xx = _mm_grid(FEATURE_CROP)
    a, b, c, d = 3.0, -2.0, 1.5, 0.8  # f = a z² + b y² + c x² + d z y  (HU, mm)
    f = a * zz**2 + b * yy**2 + c * xx**2 + d * zz * yy
    h = hessian_at_centre(np.stack([f, -f]), FEATURE_CROP, 2.5)
    want = np.array([[2 * a, d, 0], [d, 2 * b, 0], [0, 0, 2 * c]])
    np.testing.assert_allclose(h[0], want, atol=0.05 * np.abs(want).max())
    np.testing.assert_allclose(h[1], -want, atol=0.05 * np.abs(want).max())


def _window(hu: np.ndarray) -> np.ndarray:
    lo, hi = FEATURE_CROP.hu_window
    return (np.clip(hu, lo, hi) - lo) / (hi - lo)


def _features(*shapes) -> dict[str, np.ndarray]:
    """Descriptors of analytic crops: each shape maps the (z, y, x) mm grid to HU, drawn on both boxes."""
    crops = [_window(np.stack([shape(*_mm_grid(spec)) for shape in shapes])) for spec in (FEATURE_CROP, FINE_CROP)]
    return dict(zip(FEATURE_NAMES, crop_features(*crops).T, strict=False))


LUNG, TISSUE = -850.0, 40.0


def _ball(d_mm: float, inside: float = TISSUE, outside: float = LUNG):
    return lambda z, y, x: np.where(z**2 + y**2 + x**2 <= (d_mm / 2) ** 2, inside, outside)


def _tube(d_mm: float):  # a vessel along R, through the box
    return lambda z, y, x: np.where(z**2 + x**2 <= (d_mm / 2) ** 2, TISSUE, LUNG)


def test_a_ball_and_a_vessel_get_the_descriptors_that_tell_them_apart():
    f = _features(_ball(10.0), _tube(5.0))  # a 10 mm nodule, a 5 mm vessel
    assert f["lump_elongation_600hu"][0] < 1.2 < 3.0 < f["lump_elongation_600hu"][1]
    assert f["lump_surface_share_600hu"][0] == 0 < f["lump_surface_share_600hu"][1]
    assert f["lump_ball_exits_600hu"][0] == 0 and f["lump_ball_exits_600hu"][1] == 2
    assert f["shell_air_6_11mm"][0] == 1.0 > f["shell_air_6_11mm"][1]
    # a ball curves down along all three axes at its centre (even its weakest curvature is
    # strong); a tube curves down across its axis only (its weakest curvature is about zero)
    assert f["curv_max_s2.5mm"][1] > 100 and f["curv_min_s2.5mm"][0] > 100
    assert abs(f["curv_min_s2.5mm"][1]) < 0.1 * f["curv_min_s2.5mm"][0]
    assert f["blob_ratio_s2.5mm"][0] > 0.5 > f["blob_ratio_s2.5mm"][1]
    assert f["contrast_4_8mm"][0] > f["contrast_4_8mm"][1] > 0
    assert f["mean_hu_r2mm"][0] == pytest.approx(TISSUE, abs=1)
    # lung around it: nearly the whole box for both; none for a lump inside soft tissue
    air = _features(_ball(10.0), _ball(10.0, inside=60.0, outside=TISSUE))["box_air"]
    assert air[0] > 0.9 and air[1] == 0


def test_each_lump_is_measured_at_its_own_size():
    """Scale selection: a 4 mm nodule answers at a fine scale, a 12 mm one at a coarse one, and at
    its own scale each curves down along all three axes alike; a 2 mm vessel never does."""
    f = _features(_ball(4.0), _ball(12.0), _tube(2.0))
    scale = np.exp(f["best_scale_log_mm"])
    assert scale[0] <= 1.25 and scale[1] >= 2.5  # σ ≈ r/√3: 1.2 mm and 3.5 mm
    assert f["best_scale_blob_ratio"][0] > 0.5 and f["best_scale_blob_ratio"][1] > 0.5
    assert f["best_scale_blob_ratio"][2] < 0.2
    # at the coarse scales alone the small ball is a faint blur: its fine curvature is stronger
    assert f["curv_min_s0.8mm"][0] > 1.5 * f["curv_min_s2.5mm"][0]
    assert f["best_scale_curv_min"][0] > 5 * abs(f["best_scale_curv_min"][2])


@pytest.mark.parametrize("hidden", [0, 16])
def test_the_ranker_learns_a_separable_signal_and_reloads_from_its_weights(hidden):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.random(n) < 0.1
    feats = rng.normal(size=(n, len(FEATURE_NAMES)))
    k = FEATURE_NAMES.index("lump_elongation_600hu")
    feats[:, k] -= 4.0 * y  # nodules are rounder
    crop_p = np.clip(0.5 + 0.05 * rng.normal(size=n), 0.01, 0.99)  # an uninformative network
    x = ranker_inputs(feats, crop_p, "image")
    assert x.shape[1] == len(INPUT_SETS["image"]) == len(FEATURE_NAMES) - 5  # no generator, gate or network
    assert ranker_inputs(feats, crop_p, "all").shape[1] == len(FEATURE_NAMES)  # + network − gate
    model = fit_ranker(x[:300], y[:300], inputs="image", hidden=hidden)
    p = rank(model, x[300:])
    assert roc_auc_score(y[300:], p) > 0.9
    assert strongest_inputs(model, x[:300], 1)[0][0] == "lump_elongation_600hu"
    assert strongest_inputs(model, x[:300], 1)[0][1] < 0  # rounder (lower elongation): more likely a nodule
    again = create_model("ct_candidate_ranker", **{k: v for k, v in model.medlens_config.items() if k != "name"})
    again.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    np.testing.assert_allclose(rank(again.eval(), x[300:]), p, rtol=1e-6)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())  # plain tensors: weights-only


def test_the_lung_gate_is_off_in_packages_written_before_it():
    from medlens.ct.detect import DetectParams

    d = DetectParams(min_lung_air=0.1).to_dict()
    assert DetectParams.from_dict(d).min_lung_air == 0.1
    d.pop("min_lung_air")
    assert DetectParams.from_dict(d).min_lung_air == 0.0


def test_the_ranker_needs_both_kinds_of_candidate():
    with pytest.raises(ValueError, match="nodules and non-nodules"):
        fit_ranker(np.zeros((5, len(INPUT_SETS["all"]))), np.zeros(5))


def test_reasons_are_the_exact_terms_of_the_logit():
    from medlens.ct.ranker import reasons

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, len(INPUT_SETS["image"])))
    y = x[:, 3] > 0.5
    model = fit_ranker(x, y, inputs="image", hidden=0, c=1.0)
    why = reasons(model, x[:5], k=len(INPUT_SETS["image"]))
    w = model.linear.weight.detach().double().numpy()[0]
    z = (x[:5] - model.mean.double().numpy()) / model.scale.double().numpy()
    logit = z @ w + float(model.linear.bias.detach())
    for i, text in enumerate(why):
        parts = [float(t.rsplit("(", 1)[1].rstrip(")")) for t in text.split("; ")]
        assert sum(parts) + float(model.linear.bias.detach()) == pytest.approx(logit[i], abs=0.01 * len(parts))
    assert reasons(model, x[:2], k=1)[0].startswith(INPUT_SETS["image"][3])


def test_the_hidden_layer_learns_what_a_linear_ranker_cannot_and_explains_it():
    """A nodule is a lump of the right size: neither too small nor too large (a band, not a
    direction). The logistic regression cannot rank that; the hidden layer can, and its reasons
    are the logit's change when the descriptor is set to the mean."""
    from medlens.ct.ranker import occlusion_effects, reasons

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, len(INPUT_SETS["image"])))
    y = np.abs(x[:, 7]) < 0.6
    fitted = {h: fit_ranker(x[:1400], y[:1400], inputs="image", hidden=h) for h in (0, 16)}
    aucs = {h: roc_auc_score(y[1400:], rank(m, x[1400:])) for h, m in fitted.items()}
    assert aucs[16] > 0.95 and aucs[0] < 0.6
    model = fitted[16]
    eff = occlusion_effects(model, x[1400:1410])
    moved = x[1400:1410].copy()
    moved[:, 7] = model.mean[7].item()
    t = torch.as_tensor
    want = (model(t(x[1400:1410], dtype=torch.float32)) - model(t(moved, dtype=torch.float32)))[:, 0].detach().numpy()
    np.testing.assert_allclose(eff[:, 7], want, atol=1e-5)
    outside = x[1400:][np.abs(x[1400:, 7]) > 1.2]  # far outside the band: that descriptor is why it ranks low
    assert all(r.startswith(INPUT_SETS["image"][7]) for r in reasons(model, outside, k=1))


def test_the_hidden_layer_answers_beyond_the_training_range_as_at_its_edge():
    """A descriptor value no training candidate had is clamped to the most extreme one seen, so
    the network does not extrapolate (a linear model stays unclamped: it is monotone)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))
    y = x[:, 0] > 0.3
    model = fit_ranker(x, y, inputs="image", hidden=8)
    edge = x[:, 0].max()
    far = np.zeros((3, 5))
    far[:, 0] = [edge, edge + 5, edge + 500]
    p = rank(model, far)
    assert p[0] == pytest.approx(p[1], abs=1e-6) and p[1] == pytest.approx(p[2], abs=1e-6)
    linear = fit_ranker(x, y, inputs="image", hidden=0, c=1.0)
    q = rank(linear, far)
    assert q[0] < q[1] < q[2] or q[2] == pytest.approx(1.0)


def test_a_package_ranker_without_a_hidden_layer_reloads_as_the_logistic_regression():
    """Packages written before the hidden layer stored ``mean, scale, linear.*`` and no
    ``hidden_units``: they load into the same linear model."""
    old = {"mean": torch.zeros(4), "scale": torch.ones(4), "linear.weight": torch.tensor([[1.0, -2.0, 0.0, 0.5]]),
           "linear.bias": torch.tensor([0.25])}
    model = create_model("ct_candidate_ranker", num_classes=1, in_channels=4, spatial_dims=3, inputs="image")
    model.load_state_dict(old)
    assert rank(model.eval(), np.array([[1.0, 1.0, 0.0, 0.0]]))[0] == pytest.approx(1 / (1 + np.exp(1 - 0.25)))


def test_only_the_all_input_set_needs_the_crop_network():
    from medlens.ct.ranker import needs_network

    assert not needs_network("image") and needs_network("all")
    assert needs_network(["mean_hu_r2mm", "crop_network_logit"]) and not needs_network(["mean_hu_r2mm"])
