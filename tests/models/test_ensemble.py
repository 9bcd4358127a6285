"""Ensembles: probability averaging, package round trip (segmentation runs: tests/segment)."""

from __future__ import annotations

import pytest
import torch

from medlens.errors import ConfigError
from medlens.models import create_model
from medlens.models.ensemble import make_ensemble


def _members(num_classes: int, spatial_dims: int = 2):
    out = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        out.append(create_model("test_unet", num_classes=num_classes, in_channels=3,
                                spatial_dims=spatial_dims).eval())
    return out


@pytest.mark.parametrize("num_classes", [1, 3])
def test_ensemble_averages_member_probabilities(num_classes):
    members = _members(num_classes)
    ens = make_ensemble(members).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        outs = [m(x) for m in members]
        got = ens(x)
    if num_classes == 1:
        want = torch.stack([o.sigmoid() for o in outs]).mean(0)
        assert torch.allclose(got.sigmoid(), want, atol=1e-5)
    else:
        want = torch.stack([o.softmax(1) for o in outs]).mean(0)
        assert torch.allclose(got.softmax(1), want, atol=1e-5)
    assert not torch.allclose(outs[0], outs[1])  # different members, a real average
    assert ens.medlens_name == "ensemble" and len(ens.medlens_config["members"]) == 3


def test_ensemble_package_round_trip(tmp_path):
    from medlens.package import load_package, save_model_package
    from medlens.segment.models import divisor

    ens = make_ensemble(_members(1, spatial_dims=3)).eval()
    cfg = {k: v for k, v in ens.medlens_config.items() if k != "name"}
    save_model_package(tmp_path / "pkg", ens, model_name="ensemble", model_kwargs=cfg, metadata={"task": "segment"})
    loaded, _ = load_package(tmp_path / "pkg")
    x = torch.randn(1, 3, 8, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), ens(x), atol=1e-6)
    assert divisor(loaded) == 4  # the members' (test_unet) divisor
    assert loaded.get_submodule(loaded.cam_layer) is not None


@pytest.mark.parametrize("num_classes", [1, 3])
def test_ensemble_temperature_divides_each_member_before_the_average(tmp_path, num_classes):
    """A fold ensemble's temperature is fitted on single members' out-of-fold logits: it must be
    applied to each member (then averaged), not to the average, and survive a package."""
    from medlens.package import load_package, save_model_package

    members = _members(num_classes)
    ens = make_ensemble(members, temperature=2.5).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        outs = [m(x) / 2.5 for m in members]
        got = ens(x)
        plain = make_ensemble(members).eval()(x)
    if num_classes == 1:
        assert torch.allclose(got.sigmoid(), torch.stack([o.sigmoid() for o in outs]).mean(0), atol=1e-5)
    else:
        assert torch.allclose(got.softmax(1), torch.stack([o.softmax(1) for o in outs]).mean(0), atol=1e-5)
    assert not torch.allclose(got, plain / 2.5, atol=1e-3)  # not the same as dividing the average
    cfg = {k: v for k, v in ens.medlens_config.items() if k != "name"}
    save_model_package(tmp_path / "pkg", ens, model_name="ensemble", model_kwargs=cfg, metadata={"task": "segment"})
    loaded, _ = load_package(tmp_path / "pkg")
    assert loaded.temperature == 2.5
    with torch.no_grad():
        assert torch.allclose(loaded(x), got, atol=1e-6)
    assert "temperature" not in make_ensemble(members).medlens_config  # older packages' configs unchanged
    with pytest.raises(ConfigError, match="temperature"):
        make_ensemble(members, temperature=0.0)


def test_ensemble_by_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="--ensemble"):
        create_model("ensemble", num_classes=1)


def test_mirror_averages_the_image_and_its_mirror_and_survives_a_package(tmp_path):
    """Test-time mirroring: the mean probability of the network on the image and, flipped back,
    on its left-right mirror — not the image twice, not the mirrored map left unflipped."""
    from medlens.models.ensemble import with_mirror
    from medlens.package import load_model
    from medlens.package_io import save_model_package

    torch.manual_seed(0)
    net = create_model("test_unet", num_classes=1, in_channels=3).eval()
    wrapped = with_mirror(net).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = (net(x).sigmoid() + net(x.flip(-1)).sigmoid().flip(-1)) / 2
        got = wrapped(x).sigmoid()
        assert torch.allclose(got, want, atol=1e-5)
        assert not torch.allclose(got, net(x).sigmoid(), atol=1e-3)  # the mirror changed the answer
    save_model_package(tmp_path / "model", wrapped, model_name=wrapped.medlens_name,
                       model_kwargs={k: v for k, v in wrapped.medlens_config.items() if k != "name"},
                       metadata={"task": "segment"})
    back = load_model(tmp_path / "model").model
    with torch.no_grad():
        assert torch.allclose(back(x).sigmoid(), want, atol=1e-5)
    clf = create_model("test_cnn", num_classes=3, in_channels=3).eval()
    with torch.no_grad():  # a classifier's (B, K) output: the mean of the two softmaxes
        assert torch.allclose(with_mirror(clf)(x).softmax(1),
                              (clf(x).softmax(1) + clf(x.flip(-1)).softmax(1)) / 2, atol=1e-5)
    with pytest.raises(ConfigError, match="wraps a trained network"):
        create_model("mirror", num_classes=1, in_channels=3)
