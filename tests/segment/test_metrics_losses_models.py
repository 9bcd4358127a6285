from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medlens.errors import ConfigError
from medlens.models.registry import create_model, list_models
from medlens.segment import metrics as M
from medlens.segment.losses import create_loss, list_losses


def test_dice_iou_values_and_empty_conventions():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert M.dice(a, b) == 1.0 and M.iou(a, b) == 1.0  # both empty
    b[0, :2] = True
    assert M.dice(a, b) == 0.0 and M.iou(a, b) == 0.0  # one empty
    a[0, 1:3] = True  # overlap 1, sizes 2 and 2
    assert M.dice(a, b) == pytest.approx(0.5)
    assert M.iou(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes"):
        M.dice(a, b[:2])


def test_per_slice_matches_scalar():
    rng = np.random.default_rng(0)
    p, t = rng.random((5, 8, 8)) > 0.6, rng.random((5, 8, 8)) > 0.6
    t[2] = False
    p[2] = False
    ps = M.per_slice(p, t)
    assert ps["dice"][2] == 1.0
    for i in range(5):
        assert ps["dice"][i] == pytest.approx(M.dice(p[i], t[i]))
        assert ps["iou"][i] == pytest.approx(M.iou(p[i], t[i]))


def test_hd95_uses_spacing_and_conventions():
    t = np.zeros((1, 10, 10), bool)
    t[0, 2:4, 2:4] = True
    p = np.roll(t, 3, axis=2)
    d = M.hd95(p, t)
    assert d == pytest.approx(3.0)
    assert M.hd95(p, t, spacing=(1.0, 1.0, 2.0)) == pytest.approx(6.0)
    assert M.hd95(np.zeros_like(t), np.zeros_like(t)) == 0.0
    assert math.isnan(M.hd95(p, np.zeros_like(t)))


def test_lesion_detection_and_volume_error():
    t = np.zeros((12, 12), bool)
    t[1:3, 1:3] = True  # lesion 1
    t[8:10, 8:10] = True  # lesion 2 (missed)
    p = np.zeros_like(t)
    p[2, 2] = True  # hits lesion 1
    p[5, 10] = True  # false positive component
    r = M.lesion_detection(p, t)
    assert r["lesions"] == 2 and r["detected"] == 1 and r["detection_rate"] == 0.5
    assert r["false_positive_components"] == 1
    v = M.volume_error(p, t, voxel_volume=2.0)
    assert v["volume_error"] == (2 - 8) * 2.0 and v["volume_error_rel"] == pytest.approx(-0.75)


def test_per_patient_volume_dice_differs_from_mean_slice_dice():
    t = np.zeros((2, 4, 4), bool)
    t[0, :2, :2] = True
    p = t.copy()
    p[1, 0, 0] = True  # one false positive pixel on an empty slice
    rows = M.per_patient(p, t, ["a", "a"])
    assert rows["a"]["dice"] == pytest.approx(8 / 9)
    assert rows["a"]["slices"] == 2
    s = M.summarise({"x": {"dice": 1.0, "hd95": float("nan")}, "y": {"dice": 0.5, "hd95": 2.0}})
    assert s["mean_dice"] == 0.75 and s["mean_hd95"] == 2.0 and s["undefined_hd95"] == 1


@pytest.mark.parametrize("name", ["dice", "dice_bce", "jaccard", "focal", "dice_focal"])
def test_losses_lower_for_better_prediction(name):
    loss = create_loss(name)
    y = torch.zeros(2, 1, 8, 8)
    y[:, :, 2:6, 2:6] = 1
    good = (y * 2 - 1) * 6
    bad = -good
    assert float(loss(good, y)) < float(loss(bad, y))
    assert name in list_losses()


def test_loss_typo_gets_suggestion():
    with pytest.raises(ConfigError, match="dice_bce"):
        create_loss("dice_bc")


TINY = {"test_unet": {}, "unet": {"channels": (4, 8, 16)}, "basic_unet": {"features": (4, 4, 8, 8, 16, 4)},
        "dynunet": {"filters": (4, 8, 16)}, "unet_lgg": {}}


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("dims", [2, 3])
def test_unets_forward_backward_2d_3d(name, dims):
    if name == "unet_lgg" and dims == 3:
        pytest.skip("covered in 2D; the 3D build is the same code path and slow")
    torch.manual_seed(0)
    m = create_model(name, num_classes=1, in_channels=2, spatial_dims=dims, **TINY[name])
    side = 32 if dims == 2 or name == "basic_unet" else 16
    x = torch.randn(2, 2, *([side] * dims))
    y = m(x)
    assert y.shape == (2, 1, *([side] * dims))
    assert torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    assert m.medlens_name == name
    m.get_submodule(m.cam_layer)  # the CAM target exists


def test_unet_lgg_matches_original_config():
    m = create_model("unet_lgg", num_classes=1)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    widths = sorted({c.out_channels for c in convs})
    assert {32, 64, 128, 256, 512} <= set(widths)
    assert max(widths) == 512
    assert set(list_models("*unet*")) >= {"unet", "unet_lgg", "basic_unet", "dynunet", "test_unet"}


def test_output_bias_starts_at_prior():
    from medlens.segment.models import init_output_bias

    m = create_model("test_unet", num_classes=1)
    assert init_output_bias(m, 0.01)
    m.eval()
    with torch.no_grad():
        p = torch.sigmoid(m(torch.zeros(1, 3, 16, 16))).mean()
    assert float(p) < 0.1
